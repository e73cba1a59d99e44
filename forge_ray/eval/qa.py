"""Question answering accuracy of a model directory on a JSONL of ``prompt``/``answer``.

Greedy generation with HF ``generate`` through the model's own chat template; the answer
counts when the normalised reference appears, as whole words, in the first line of the
generation (up to the end of the assistant turn). Small and dependency-free on purpose: it is how the demo pipeline
shows that SFT taught the model to answer from what pre-training put in its weights.

    python -m forge_ray.eval.qa forge_runs/demo-sft/model forge_runs/demo-data/eval.jsonl [chat|plain]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def is_correct(output: str, answer: str) -> bool:
    """The reference, as whole words, in the first line of the output (answers may be a
    sentence: "The part number of X is AB-1234."): the RL ``contains_answer`` reward."""
    from forge_ray.rl.rewards.functions import contains_answer

    return contains_answer([""], [output], answer=[answer]) == [1.0]


def qa_accuracy(model_dir: str | Path, eval_path: str | Path, max_new_tokens: int = 16, model=None,
                style: str = "chat") -> dict:
    """``style="chat"`` asks through the chat template (what an assistant is asked);
    ``style="plain"`` asks ``Q: …\nA:`` as raw text and reads the answer up to the end of
    the line: a base model's native format, which shows what pre-training alone stored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False)
    model.eval()
    end_ids = [i for i in (tok.convert_tokens_to_ids("<|end|>"), tok.eos_token_id) if i is not None]
    items = [json.loads(line) for line in Path(eval_path).read_text().splitlines() if line.strip()]
    results = []
    with torch.no_grad():
        for item in items:
            if style == "chat":
                ids = tok.apply_chat_template([{"role": "user", "content": item["prompt"]}],
                                              add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            else:
                ids = tok(f"Q: {item['prompt']}\nA:")["input_ids"]
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=end_ids, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0, len(ids):], skip_special_tokens=True)
            if style != "chat":
                text = text.strip().split("\n")[0]
            results.append({"prompt": item["prompt"], "answer": item["answer"], "output": text,
                            "correct": is_correct(text, str(item["answer"]))})
    return {"accuracy": sum(r["correct"] for r in results) / max(len(results), 1), "n": len(results),
            "items": results}


if __name__ == "__main__":
    report = qa_accuracy(sys.argv[1], sys.argv[2], style=sys.argv[3] if len(sys.argv) > 3 else "chat")
    for r in report["items"]:
        print(f"{'✓' if r['correct'] else '✗'} {r['prompt']!r} → {r['output']!r} (expected {r['answer']!r})")
    print(f"accuracy {report['accuracy']:.2%} on {report['n']} questions")
