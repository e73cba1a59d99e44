"""Training throughput: forge-ray pre-training (Ray Train + DeepSpeed + prepared data) vs a
plain single-process torch loop of the same model on the same batches; then 1 → 2 workers.

Both paths run the same objective (``CausalLMObjective``: document-confined attention,
masked next-token loss) with AdamW; tokens/s is the median over steps after warm-up, so
start-up (Ray, worker processes, DeepSpeed init) is excluded from both.

The plain loop is ``bench/mfu.py``'s (the same capability switches: bf16 autocast, the
attention kernel ``auto`` picks); on a GPU the ratio is the cost of Ray Train, DeepSpeed's
engine (bf16 master weights) and the streamed data over the bare device loop.

CPU:      python bench/train_overhead.py [--preset small] [--steps 30]
One GPU:  python bench/train_overhead.py --preset 1b --gpu --seq-len 2048 --batch 8 --workers 1 --copies 4
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
    """Tokens/s of the same model, objective and batches in one process (the baseline)."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from forge_ray.data.stream import PackedStream
    from forge_ray.train import capabilities

    from mfu import build, timed_steps  # bench/mfu.py: the device-level loop

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    caps = capabilities.detect(attention=args.attention)
    _, objective, optimizer = build(args.preset, len(tok), args.seq_len, caps)
    keys = ("input_ids", "segment_ids", "position_ids", "loss_mask")
    batches = [{k: torch.as_tensor(np.asarray(b[k]), dtype=torch.long) for k in keys}
               for b in itertools.islice(iter(PackedStream(files, batch_size=args.batch, seed=0)), args.steps)]
    times = timed_steps(objective, optimizer, batches, caps, len(batches))
    del objective, optimizer
    if caps.device == "cuda":
        torch.cuda.empty_cache()  # the trainer's worker needs the device next
    return args.batch * args.seq_len / statistics.median(times[args.warmup:])


def forge_run(storage: Path, workers: int, args) -> dict:
    """Median tokens/s and MFU of ``forge`` pre-training (Ray Train + DeepSpeed) on the same data."""
    from forge_ray import api

    name = f"bench-{workers}w"
    gpus = 1 if args.gpu else 0
    api.run({"kind": "pretrain", "name": name, "tokenizer": "tok", "dataset": "corpus", "model": {"preset": args.preset},
             "optim": {"lr": 1e-4 if args.gpu else 1e-3, "warmup_steps": 0},
             "train": {"max_steps": args.steps, "micro_batch_size": args.batch // workers, "seq_len": args.seq_len,
                       "eval_every": 0, "checkpoint_every": 0, "attention": args.attention},
             "resources": {"num_workers": workers, "cpus_per_worker": args.threads / workers,
                           "gpus_per_worker": gpus}},
            storage=str(storage), show_progress=False)
    rows = [json.loads(line) for line in (storage / name / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r][args.warmup:]
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "mfu": statistics.median(r["mfu"] for r in rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences per step)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the whole run (both paths)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (bf16, the CUDA switches)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run forge with")
    p.add_argument("--attention", default="auto", choices=["auto", "flex", "sdpa", "eager"])
    p.add_argument("--copies", type=int, default=1, help="repeat the demo documents (more tokens to pack)")
    args = p.parse_args()

    import ray

    from forge_ray import api
    from forge_ray.data.stream import dataset_files
    from forge_ray.demo.corpus import write_demo_data

    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        write_demo_data(work / "demo", seed=0)
        docs = work / "demo" / "docs"
        for i in range(1, args.copies):  # more text for long sequences × many steps
            shutil.copytree(work / "demo" / "docs", work / "more" / f"copy{i}")
        ray.init(logging_level="ERROR")
        storage = work / "runs"
        api.run({"kind": "tokenizer", "name": "tok", "vocab_size": 2048,
                 "sources": [{"path": str(docs)}]}, storage=str(storage), show_progress=False)
        sources = [{"path": str(docs)}] + ([{"path": str(work / "more")}] if args.copies > 1 else [])
        api.run({"kind": "data", "name": "corpus", "tokenizer": "tok", "seq_len": args.seq_len, "clean": {"exact_dedup": False, "near_dedup": False},
                 "sources": sources}, storage=str(storage), show_progress=False)
        files = dataset_files(str(storage / "corpus" / "dataset"))
        t = time.perf_counter()
        base = plain_loop(files, storage / "tok" / "tokenizer", args)
        results = {w: forge_run(storage, w, args) for w in args.workers}
        device = "1 GPU per worker" if args.gpu else f"{args.threads} CPU threads"
        print(f"model preset {args.preset!r}, batch {args.batch} x {args.seq_len} tokens, {device}")
        print(f"plain single-process torch loop : {base:10,.0f} tokens/s")
        for w, r in results.items():
            print(f"forge-ray, {w} worker(s) (DeepSpeed): {r['tokens_per_s']:10,.0f} tokens/s   "
                  f"ratio {r['tokens_per_s'] / base:.3f}x   MFU {r['mfu']:.1%}")
        print(json.dumps({"bench": "train_overhead", "preset": args.preset, "seq_len": args.seq_len,
                          "batch": args.batch, "gpu": args.gpu, "plain_tokens_per_s": base,
                          "forge": {str(w): r for w, r in results.items()}, "wall_s": time.perf_counter() - t}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
