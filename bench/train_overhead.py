"""Training throughput: forge-ray pre-training (Ray Train + DeepSpeed + prepared data) vs a
plain single-process torch loop of the same model on the same batches; then 1 → 2 workers.

Both paths run the same objective (``CausalLMObjective``: document-confined attention,
masked next-token loss) with AdamW; tokens/s is the median over steps after warm-up, so
start-up (Ray, worker processes, DeepSpeed init) is excluded from both.

CPU:      python bench/train_overhead.py [--preset small] [--steps 30]
One GPU:  python bench/train_overhead.py --preset 125m --gpu
Cluster:  RAY_ADDRESS=HEAD:6379 python bench/train_overhead.py --preset 1b --gpu --workers 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def plain_loop(files, tok_dir, args) -> float:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_ray.data.stream import PackedStream
    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.objectives import CausalLMObjective

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(resolve(ModelSpec(preset=args.preset)), len(tok),
                                                       tok.bos_token_id, tok.eos_token_id, tok.pad_token_id))
    objective = CausalLMObjective(model)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    times = []
    for batch in itertools.islice(iter(PackedStream(files, batch_size=args.batch, seed=0)), args.steps):
        t = time.perf_counter()
        b = {k: torch.as_tensor(np.asarray(batch[k]), dtype=torch.long)
             for k in ("input_ids", "segment_ids", "position_ids", "loss_mask")}
        loss = objective(**b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return args.batch * args.seq_len / statistics.median(times[args.warmup:])


def forge_run(storage: Path, workers: int, args) -> float:
    from forge_ray import api

    name = f"bench-{workers}w"
    api.run({"kind": "pretrain", "name": name, "tokenizer": "tok", "dataset": "corpus", "model": {"preset": args.preset},
             "optim": {"lr": 1e-3, "warmup_steps": 0},
             "train": {"max_steps": args.steps, "micro_batch_size": args.batch // workers, "seq_len": args.seq_len,
                       "eval_every": 0, "checkpoint_every": 0},
             "resources": {"num_workers": workers, "cpus_per_worker": args.threads / workers}},
            storage=str(storage), show_progress=False)
    rows = [json.loads(line) for line in (storage / name / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in rows[args.warmup:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences per step)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the whole run (both paths)")
    args = p.parse_args()

    import ray

    from forge_ray import api
    from forge_ray.demo.corpus import write_demo_data
    from forge_ray.data.stream import dataset_files

    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        write_demo_data(work / "demo", seed=0)
        ray.init(logging_level="ERROR")
        storage = work / "runs"
        api.run({"kind": "tokenizer", "name": "tok", "vocab_size": 2048,
                 "sources": [{"path": str(work / "demo" / "docs")}]}, storage=str(storage), show_progress=False)
        api.run({"kind": "data", "name": "corpus", "tokenizer": "tok", "seq_len": args.seq_len,
                 "sources": [{"path": str(work / "demo" / "docs")}]}, storage=str(storage), show_progress=False)
        files = dataset_files(str(storage / "corpus" / "dataset"))
        base = plain_loop(files, storage / "tok" / "tokenizer", args)
        one = forge_run(storage, 1, args)
        two = forge_run(storage, 2, args)
        print(f"model preset {args.preset!r}, batch {args.batch} x {args.seq_len} tokens, {args.threads} CPU threads")
        print(f"plain single-process torch loop : {base:10,.0f} tokens/s")
        print(f"forge-ray, 1 worker (DeepSpeed) : {one:10,.0f} tokens/s   ratio {one / base:.2f}x")
        print(f"forge-ray, 2 workers            : {two:10,.0f} tokens/s   scaling 1->2 workers {two / one:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
