"""Pre-training MFU of a model preset on one device, with the capability switches the trainer uses.

The model forge builds (``registry`` → a ``transformers`` Llama or Mixtral), the objective
forge trains (document-confined attention over packed rows, masked next-token loss, MoE
auxiliary losses), attention and precision chosen by ``forge_ray.train.capabilities`` — in a
plain single-process torch loop (AdamW, bf16 autocast on GPUs), no Ray and no DeepSpeed:
the device-level ceiling that ``bench/train_overhead.py`` compares the whole trainer to.

MFU = tokens/s × FLOPs per token (6·N_active + 12·L·d·T, ``registry.estimate``) ÷ the dense
matmul peak measured in the same run (bf16 on GPUs, fp32 on CPU). Rows are synthetic:
random tokens packed into documents of random length, so no tokenizer or corpus is needed.
Prints one JSON line.

CPU:      python bench/mfu.py --preset tiny --seq-len 256 --batch 4 --steps 6 --vocab 2048
One GPU:  python bench/mfu.py --preset 1b --seq-len 2048 --batch 8            (add --compile)
          python bench/mfu.py --preset moe-small --seq-len 2048 --batch 8
Cluster:  a one-device figure; for the trainer on many workers see bench/train_overhead.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def packed_batch(batch: int, seq_len: int, vocab: int, mean_doc: int, generator: torch.Generator) -> dict:
    """Rows of whole documents (lengths ~ exponential around ``mean_doc``), like the packer's."""
    seg = torch.zeros(batch, seq_len, dtype=torch.long)
    pos = torch.zeros(batch, seq_len, dtype=torch.long)
    for b in range(batch):
        start, doc = 0, 1
        while start < seq_len:
            n = max(8, int(torch.empty(1).exponential_(1 / mean_doc, generator=generator)))
            end = min(seq_len, start + n)
            seg[b, start:end] = doc
            pos[b, start:end] = torch.arange(end - start)
            start, doc = end, doc + 1
    ids = torch.randint(3, vocab, (batch, seq_len), generator=generator)
    return {"input_ids": ids, "segment_ids": seg, "position_ids": pos, "loss_mask": torch.ones_like(ids)}


def timed_steps(objective, optimizer, batches: list[dict], caps, steps: int) -> list[float]:
    """Seconds per optimizer step (forward, backward, clip, AdamW), device-synchronised."""
    sync = torch.cuda.synchronize if caps.device == "cuda" else (lambda: None)
    times = []
    for i in range(steps):
        batch = {k: v.to(caps.device, non_blocking=True) for k, v in batches[i % len(batches)].items()}
        sync()
        t = time.perf_counter()
        with torch.autocast(caps.device, dtype=caps.dtype, enabled=caps.precision == "bf16"):
            loss = objective(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t)
    return times


def build(preset: str, vocab: int, seq_len: int, caps):
    """The preset as forge builds it, on the device, with the switches applied."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train import capabilities
    from forge_ray.train.objectives import CausalLMObjective

    arch = resolve(ModelSpec(preset=preset))
    torch.manual_seed(0)
    with torch.device(caps.device):
        model = AutoModelForCausalLM.from_config(hf_config(arch, vocab, 1, 2, 0), dtype=torch.float32)
    capabilities.apply(model, caps)
    objective = CausalLMObjective(model, None, arch.router_aux_loss_coef if arch.arch == "moe" else 0.0,
                                  arch.router_z_loss_coef if arch.arch == "moe" else 0.0)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-4, fused=caps.device in ("cuda", "cpu"))  # as forge's
    return arch, objective, optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--mean-doc", type=int, default=600, help="mean document length in tokens")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--attention", default="auto", choices=["auto", "flex", "sdpa", "eager"])
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()

    from forge_ray.models.registry import estimate
    from forge_ray.train import capabilities
    from forge_ray.train.metrics import measured_peak_flops

    caps = capabilities.detect("auto", args.attention, args.compile)
    peak = measured_peak_flops(caps.dtype, caps.device, size=8192 if caps.device == "cuda" else 1024)
    arch, objective, optimizer = build(args.preset, args.vocab, args.seq_len, caps)
    est = estimate(arch, args.vocab, args.seq_len, args.batch, 1)
    g = torch.Generator().manual_seed(0)
    batches = [packed_batch(args.batch, args.seq_len, args.vocab, args.mean_doc, g) for _ in range(4)]
    t0 = time.perf_counter()
    times = timed_steps(objective, optimizer, batches, caps, args.steps + args.warmup)
    step_s = statistics.median(times[args.warmup:])
    tokens_per_s = args.batch * args.seq_len / step_s
    out = {"bench": "mfu", "preset": args.preset, "params": est.params, "active_params": est.active_params,
           "seq_len": args.seq_len, "batch": args.batch, "vocab": args.vocab, **caps.to_json(),
           "step_s": step_s, "tokens_per_s": tokens_per_s, "flops_per_token": est.flops_per_token,
           "peak_tflops": peak / 1e12, "mfu": tokens_per_s * est.flops_per_token / peak,
           "first_steps_s": [round(t, 3) for t in times[:args.warmup]], "total_s": time.perf_counter() - t0}
    if caps.device == "cuda":
        out["max_memory_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        out["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
