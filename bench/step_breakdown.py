"""Where the trainer's step time goes beyond the plain loop: the same model, objective and
batches in one process, stepped several ways, each timed per phase (forward, backward,
optimizer step; device-synchronised between phases), then a ``torch.profiler`` table of the
trainer's own step. ``bench/train_overhead.py`` gives the end-to-end ratio (Ray Train and the
data stream included); this says which part of the step makes it.

Variants (each on a freshly built model, seeded the same):
  plain          fp32 weights under bf16 autocast, fused AdamW, clip (``bench/mfu.py``'s loop)
  ds-bf16        DeepSpeed's engine, ZeRO-0, its bf16 mode (bf16 weights, fp32 master copy)
                 around torch's multi-tensor AdamW: the trainer before it chose by ZeRO stage
  ds-bf16-fused  the same with torch's fused AdamW
  zero1-bf16     ZeRO-1 (flat-buffer master copy) with fused AdamW
  ds             what the trainer builds now (``bf16_mode``, ``engine.build_optimizer``,
                 ``engine.clip_and_norm``): for ZeRO-0 DeepSpeed's torch_autocast over fp32
                 weights with fused AdamW, clipped by the trainer with one fused norm
  ds+trainer     ``ds`` plus the trainer's per-step bookkeeping (gradient norm, loss readback,
                 all-reduce of the logged loss)
On a CPU every variant is fp32 (bf16 is a GPU switch): a smoke test of the script only.

CPU:      python bench/step_breakdown.py --preset tiny --seq-len 256 --batch 4 --vocab 2048 --steps 4
One GPU:  python bench/step_breakdown.py --preset 1b --seq-len 2048 --batch 8 --vocab 2048
Cluster:  a one-device figure (the per-worker step); run it on one node of the cluster.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time

import torch


def _sync(caps):
    if caps.device == "cuda":
        torch.cuda.synchronize()


def _free(caps) -> None:
    gc.collect()
    if caps.device == "cuda":
        torch.cuda.empty_cache()


def _phases(run_step, batches, caps, steps: int, warmup: int) -> dict:
    """Median seconds of each phase and of the whole step over ``steps`` after ``warmup``."""
    rows = []
    for i in range(steps + warmup):
        marks = run_step(batches[i % len(batches)])
        rows.append(marks)
    rows = rows[warmup:]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _timer(caps):
    """Returns ``mark(name)``: device-synchronised seconds since the previous mark."""
    state = {"t": None, "out": {}}

    def mark(name: str | None = None):
        _sync(caps)
        now = time.perf_counter()
        if name is not None:
            state["out"][name] = now - state["t"]
        state["t"] = now
        return state["out"]

    return mark


def plain(args, caps, batches) -> dict:
    from mfu import build  # bench/mfu.py

    _, objective, optimizer = build(args.preset, args.vocab, args.seq_len, caps)

    def step(cpu_batch):
        mark = _timer(caps)
        batch = {k: v.to(caps.device, non_blocking=True) for k, v in cpu_batch.items()}
        mark()
        with torch.autocast(caps.device, dtype=caps.dtype, enabled=caps.precision == "bf16"):
            loss = objective(**batch)
        mark("forward_s")
        loss.backward()
        mark("backward_s")
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out = mark("optimizer_s")
        out["step_s"] = sum(out.values())
        return dict(out)

    result = _phases(step, batches, caps, args.steps, args.warmup)
    step = objective = optimizer = None  # free the model before the next variant
    _free(caps)
    return result


def deepspeed_variant(args, caps, batches, *, zero: int = 0, mode: str | None = None, fused: bool | None = None,
                      bookkeeping: bool = False, profile: bool = False) -> dict:
    """The trainer's engine set-up and step (``forge_ray/train/loop.py``) on one device;
    ``mode``/``fused`` default to the trainer's own choices."""
    import deepspeed

    from forge_ray.distributed import engine as engine_factory
    from forge_ray.distributed.deepspeed_config import bf16_mode, build_ds_config
    from forge_ray.spec.sections import OptimSpec, TrainSpec
    from forge_ray.train import loop
    from forge_ray.train.capabilities import to_device

    from mfu import build

    _, objective, _unused = build(args.preset, args.vocab, args.seq_len, caps)
    del _unused
    optim = OptimSpec(lr=1e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    fused = caps.device in ("cuda", "cpu") if fused is None else fused
    optimizer = engine_factory.build_optimizer(objective, optim, offload=False, fused=fused)
    train = TrainSpec(micro_batch_size=args.batch, seq_len=args.seq_len, max_steps=args.steps + args.warmup,
                      zero_stage=zero)
    own_clip = engine_factory.clips_itself(zero) and mode != "deepspeed"  # DeepSpeed's bf16 wrapper clips its own copy
    config = build_ds_config(train, 1, 0.0 if own_clip else 1.0, caps.precision, mode or bf16_mode(zero))
    engine, optimizer, _, _ = deepspeed.initialize(model=objective, optimizer=optimizer, config=config,
                                                   dist_init_required=False)
    keys = objective.batch_keys

    def step(cpu_batch):
        mark = _timer(caps)
        batch = to_device(cpu_batch, keys, engine.device, caps.pin_memory)
        mark()
        loss = engine(**batch)
        mark("forward_s")
        engine.backward(loss)
        mark("backward_s")
        norm = engine_factory.clip_and_norm(engine, objective, 1.0, own_clip)
        engine.step()
        if bookkeeping:
            loop._all_reduce([float(objective.logged_loss(loss)), float(norm)])
        out = mark("optimizer_s")
        out["step_s"] = sum(out.values())
        return dict(out)

    result = _phases(step, batches, caps, args.steps, args.warmup)
    if profile:
        result["profile"] = _profile(step, batches, caps)
    engine.destroy()
    step = engine = optimizer = objective = None  # free the model before the next variant
    _free(caps)
    return result


def _profile(step, batches, caps, steps: int = 3) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if caps.device == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            step(batches[i % len(batches)])
    by = "self_cuda_time_total" if caps.device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=by, row_limit=18, max_name_column_width=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attention", default="auto", choices=["auto", "flex", "sdpa", "eager"])
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()

    import torch.distributed as dist

    from forge_ray.train import capabilities

    from mfu import packed_batch

    caps = capabilities.detect("auto", args.attention, False)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("nccl" if caps.device == "cuda" else "gloo")
    if caps.device == "cuda":
        torch.cuda.set_device(0)
    g = torch.Generator().manual_seed(0)
    batches = [packed_batch(args.batch, args.seq_len, args.vocab, 600, g) for _ in range(4)]
    t0 = time.perf_counter()
    variants = {"plain": lambda: plain(args, caps, batches),
                "ds-bf16": lambda: deepspeed_variant(args, caps, batches, mode="deepspeed", fused=False),
                "ds-bf16-fused": lambda: deepspeed_variant(args, caps, batches, mode="deepspeed"),
                "zero1-bf16": lambda: deepspeed_variant(args, caps, batches, zero=1),
                "ds": lambda: deepspeed_variant(args, caps, batches),
                "ds+trainer": lambda: deepspeed_variant(args, caps, batches, bookkeeping=True,
                                                        profile=not args.no_profile)}
    results, failed = {}, {}
    for name, run in variants.items():
        try:
            results[name] = run()
        except Exception as exc:  # one variant failing must not lose the others' figures
            failed[name] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"{name} failed: {failed[name]}")
            _free(caps)
    profile_table = results.get("ds+trainer", {}).pop("profile", "")
    base = results["plain"]["step_s"] if "plain" in results else float("nan")
    print(f"preset {args.preset}, {args.batch} x {args.seq_len} tokens, {caps.device} {caps.precision}, "
          f"attention {caps.attention}")
    print(f"{'variant':12} {'forward':>9} {'backward':>9} {'optimizer':>9} {'step':>9} {'vs plain':>9}")
    for name, r in results.items():
        print(f"{name:12} {r['forward_s'] * 1e3:8.1f}ms {r['backward_s'] * 1e3:8.1f}ms "
              f"{r['optimizer_s'] * 1e3:8.1f}ms {r['step_s'] * 1e3:8.1f}ms {base / r['step_s']:9.3f}")
    if profile_table:
        print("\nds+trainer, 3 steps, by self device time:\n" + profile_table)
    print(json.dumps({"bench": "step_breakdown", "preset": args.preset, "seq_len": args.seq_len, "batch": args.batch,
                      **caps.to_json(), "variants": results, "failed": failed, "wall_s": time.perf_counter() - t0}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
