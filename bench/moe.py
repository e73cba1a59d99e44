"""Mixture-of-Experts step time: the grouped expert kernel against transformers' reference
loop over experts on the same model and batch, and against a dense model with the same
*active* parameters — one process, the variants alternating step by step, medians compared.

Every variant is forge's training step (``bench/forge_step.py``: the registry's model,
``CausalLMObjective`` with the router's load-balancing and z-losses, the DeepSpeed engine,
clip). The MoE model is Mixtral-style (``experts`` experts of SwiGLU width ``expert-hidden``,
top-``top-k`` routing); the dense one is the same model with one SwiGLU of width
``top-k × expert-hidden``, so each token meets as many MLP weights in both (the router's
``width × experts`` weights aside). Reported: ``grouped_speedup`` = eager / grouped (the
grouped kernel's gain; target ≥ 2 at 8 experts top-2) and ``grouped_over_dense`` = grouped /
dense (what routing and sorting cost over a dense layer doing the same FLOPs; target ≤ 1.5).

CPU:      python bench/moe.py                                     (4 × 256, 8 experts top-2, 8 × 128 tokens)
One GPU:  python bench/moe.py --layers 12 --width 1024 --expert-hidden 2816 --batch 8 --seq-len 2048 --steps 20
Cluster:  a one-device figure (expert parallelism across workers is not built: README, MoE)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--expert-hidden", type=int, default=512, help="each expert's SwiGLU width")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29534"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import torch.distributed as dist
    from forge_step import build_forge_step

    from forge_ray.models.registry import Arch
    from forge_ray.train import capabilities

    caps = capabilities.detect()
    dist.init_process_group(caps.backend, rank=0, world_size=1)
    moe = Arch("moe", hidden_size=args.width, num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.heads,
               intermediate_size=args.expert_hidden, max_seq_len=args.seq_len, num_experts=args.experts,
               experts_per_token=args.top_k, tie_embeddings=True)
    dense = replace(moe, arch="dense", intermediate_size=args.top_k * args.expert_hidden, num_experts=0,
                    experts_per_token=0)
    steps, params = {}, {}
    for name, arch, kernel in (("moe_grouped", moe, "grouped"), ("moe_eager", moe, "eager"),
                               ("dense_same_active", dense, "grouped")):
        torch.manual_seed(0)  # the two MoE variants start from the same weights
        steps[name], params[name] = build_forge_step(arch, args.vocab, args.batch, args.seq_len,
                                                     replace(caps, experts=kernel))
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    sync = torch.cuda.synchronize if caps.device == "cuda" else (lambda: None)
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=g)
        for name, fn in steps.items():
            sync()
            t = time.perf_counter()
            losses[name].append(fn(ids))
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    ms = {name: round(1000 * statistics.median(v), 2) for name, v in times.items()}
    # same weights, same tokens: the two kernels must train the same model (routing included)
    drift = max(abs(a - b) for a, b in zip(losses["moe_grouped"], losses["moe_eager"]))
    result = {"shape": {"layers": args.layers, "width": args.width, "heads": args.heads, "experts": args.experts,
                        "top_k": args.top_k, "expert_hidden": args.expert_hidden, "batch": args.batch,
                        "seq_len": args.seq_len, "vocab": args.vocab},
              "device": caps.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "steps": args.steps, "median_ms": ms,
              "grouped_speedup": round(ms["moe_eager"] / ms["moe_grouped"], 3),
              "grouped_over_dense": round(ms["moe_grouped"] / ms["dense_same_active"], 3),
              "max_loss_difference_grouped_vs_eager": float(f"{drift:.2e}"), "params": params}
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
