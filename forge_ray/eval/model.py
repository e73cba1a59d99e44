"""One model under evaluation, in one process: batched greedy generation (HF, left-padded;
or a vLLM engine actor), log-likelihoods of continuations (multiple choice, judges) and
bits-per-byte of text. Loads safetensors only, never remote code.

    m = EvalModel("forge_runs/demo-sft/model")
    m.generate([m.prompt_ids("Who leads Team Otter?")], max_new_tokens=16)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


class EvalModel:
    def __init__(self, model_dir: str | Path, random_init_seed: int | None = None, batch_size: int = 16,
                 threads: int | None = None):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.dir = str(model_dir)
        self.tok = AutoTokenizer.from_pretrained(self.dir)
        if random_init_seed is None:
            self.model = AutoModelForCausalLM.from_pretrained(self.dir, use_safetensors=True, trust_remote_code=False,
                                                              dtype=torch.float32)
        else:  # the same architecture, untrained: the floor every trained model should clear
            torch.manual_seed(random_init_seed)
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.dir), dtype=torch.float32)
        self.model.eval()
        self.batch_size = batch_size
        self.chat = bool(getattr(self.tok, "chat_template", None))
        self.end_ids = [i for i in (self.tok.convert_tokens_to_ids("<|end|>") if "<|end|>" in self.tok.get_vocab()
                                    else None, self.tok.eos_token_id) if isinstance(i, int) and i >= 0]
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.end_ids[0]

    # ------------------------------------------------------------------ prompts

    def prompt_ids(self, prompt: str, shots: list[tuple[str, str]] = (), style: str = "auto") -> list[int]:
        """Token ids asking ``prompt`` after few-shot ``(question, answer)`` pairs: as chat
        turns through the model's template, or as ``Q: …\\nA: …`` text for base models."""
        if style == "chat" or (style == "auto" and self.chat):
            turns = []
            for q, a in shots:
                turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            turns.append({"role": "user", "content": prompt})
            return list(self.tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"])
        text = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in shots) + f"Q: {prompt}\nA:"
        return list(self.tok(text)["input_ids"])

    def decode(self, ids: list[int], style: str = "auto") -> str:
        text = self.tok.decode([t for t in ids if t not in self.end_ids], skip_special_tokens=True)
        if not (style == "chat" or (style == "auto" and self.chat)):
            text = text.strip().split("\n")[0]  # a base model's answer ends with its line
        return text.strip()

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: list[list[int]], max_new_tokens: int = 32) -> list[list[int]]:
        """Greedy completions (token ids, cut after the first end token), in batches."""
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            ids, mask = left_pad(batch, self.pad_id)
            width = ids.shape[1]
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, eos_token_id=self.end_ids, pad_token_id=self.pad_id)
            for row in gen[:, width:].tolist():
                cut = next((i + 1 for i, t in enumerate(row) if t in self.end_ids), len(row))
                out.append(row[:cut])
        return out

    # ------------------------------------------------------------------ likelihoods

    def loglik(self, contexts: list[list[int]], continuations: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each continuation after its context."""
        scores = []
        for start in range(0, len(contexts), self.batch_size):
            rows = [c + k for c, k in zip(contexts[start:start + self.batch_size],
                                          continuations[start:start + self.batch_size])]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [self.pad_id] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            with torch.no_grad():
                logp = self.model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for b, (ctx, cont) in enumerate(zip(contexts[start:start + self.batch_size],
                                               continuations[start:start + self.batch_size])):
                positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
                scores.append(float(logp[b, positions, torch.tensor(cont)].sum()))
        return scores

    def bits_per_byte(self, texts: list[str], window: int | None = None) -> dict:
        """Bits per UTF-8 byte and perplexity of ``texts`` (each scored in non-overlapping
        windows after a BOS token, so every token of the text is predicted)."""
        window = window or min(512, int(getattr(self.model.config, "max_position_embeddings", 512)))
        bos = self.tok.bos_token_id
        nll, tokens, n_bytes = 0.0, 0, 0
        for text in texts:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            n_bytes += len(text.encode("utf-8"))
            for start in range(0, len(ids), window - 1):
                chunk = ids[start:start + window - 1]
                context = [bos] if bos is not None else chunk[:1]
                target = chunk if bos is not None else chunk[1:]
                if not target:
                    continue
                nll -= self.loglik([context], [target])[0]
                tokens += len(target)
        return {"bits_per_byte": nll / math.log(2) / max(n_bytes, 1), "perplexity": math.exp(nll / max(tokens, 1)),
                "tokens": tokens, "bytes": n_bytes}


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) with every prompt ending at the last column, where
    generation starts."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask
