"""Rollout throughput: vLLM vs HF ``generate`` on the same model and prompts, as Ray actors
with the same resources, RL-shaped (``n`` samples per prompt, temperature 1, fixed length),
best of a few repeats after a warm-up. The share of an RL step spent generating is logged
by every RL run as ``generate_frac`` (see the README for both figures).

The model is a randomly initialised preset saved as an HF directory (no downloads), with
a byte-level tokenizer trained on the text you pass, so both engines see real prompts.

CPU:      python bench/rollout.py ../shared/data/tinyshakespeare.txt [--preset tiny] [--prompts 32]
One GPU:  python bench/rollout.py TEXT --preset 125m --gpus 1
Cluster:  RAY_ADDRESS=HEAD:6379 python bench/rollout.py TEXT --preset 1b --gpus 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path


def make_model(text_path: str, preset: str, out: Path) -> Path:
    """A tokenizer trained on the text and a random model of the preset, saved together."""
    import torch
    from transformers import AutoModelForCausalLM

    from forge_ray import api
    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec

    api.run({"kind": "tokenizer", "name": "bench-tok", "vocab_size": 2048, "sources": [{"path": text_path}]},
            storage=str(out), show_progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "bench-tok" / "tokenizer")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(resolve(ModelSpec(preset=preset)), len(tok), tok.bos_token_id,
                                                       tok.eos_token_id, tok.pad_token_id))
    model_dir = out / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    return model_dir


def prompts_from(text_path: str, model_dir: Path, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    lines = [line.strip() for line in Path(text_path).read_text(encoding="utf-8").splitlines() if len(line.strip()) > 20]
    return [tok.apply_chat_template([{"role": "user", "content": line}], add_generation_prompt=True, tokenize=True,
                                    return_dict=True)["input_ids"] for line in lines[:n]]


def tokens_per_s(engine, prompts, args) -> float:
    import ray

    ray.get(engine.generate.remote(prompts[:2], max_tokens=8, temperature=1.0, n=2))  # warm-up
    best = 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = ray.get(engine.generate.remote(prompts, max_tokens=args.max_tokens, temperature=1.0, n=args.n,
                                             stop_token_ids=[]))
        elapsed = time.perf_counter() - t0
        best = max(best, sum(len(s) for samples in out for s in samples) / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=float, default=1.0)
    parser.add_argument("--gpus", type=float, default=0.0)
    args = parser.parse_args()

    import ray

    from forge_ray.rl.rollout.hf_engine import HFEngine
    from forge_ray.rl.rollout.vllm_engine import VLLMEngine

    ray.init(logging_level="WARNING")
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        model_dir = make_model(args.text, args.preset, Path(tmp))
        prompts = prompts_from(args.text, model_dir, args.prompts)
        opts = dict(num_cpus=args.cpus, num_gpus=args.gpus)
        results = {}
        engines = [("hf", lambda: ray.remote(HFEngine).options(**opts).remote(
            str(model_dir), device="cuda" if args.gpus else "cpu"))]
        if importlib.util.find_spec("vllm"):  # a machine without vLLM still gets the HF figure
            engines.append(("vllm", lambda: VLLMEngine.options(**opts).remote(str(model_dir))))
        for name, make in engines:
            engine = make()
            try:
                results[name] = tokens_per_s(engine, prompts, args)
            finally:
                ray.kill(engine)
        report = {"preset": args.preset, "prompts": len(prompts), "samples_per_prompt": args.n,
                  "max_tokens": args.max_tokens, "hf_tokens_per_s": round(results["hf"], 1),
                  "vllm_tokens_per_s": round(results["vllm"], 1) if "vllm" in results else "vllm not installed",
                  "vllm_over_hf": round(results["vllm"] / results["hf"], 2) if "vllm" in results else None}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
