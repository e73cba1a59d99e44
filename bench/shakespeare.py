"""Quality per compute: a byte-level model on a plain-text file for a fixed wall-clock budget.

Same model code as forge-ray's trainers (registry Llama config, ``CausalLMObjective``), a
bytes-as-tokens vocabulary (no tokenizer: bits-per-byte is exactly the loss in bits), the
shape of nanoGPT's CPU example (4 layers × 128 wide, context 64). Reports validation
bits-per-byte after the budget, next to nanoGPT's published CPU figure (val loss 1.88
nats/char in ~3 minutes ≈ 2.71 bits/char).

CPU:      python bench/shakespeare.py ../shared/data/tinyshakespeare.txt [--minutes 3]
One GPU:  python bench/shakespeare.py data.txt --device cuda --minutes 3 --width 384 --layers 6
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import Arch, hf_config
    from forge_ray.train.objectives import CausalLMObjective

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    data = torch.frombuffer(bytearray(open(args.path, "rb").read()), dtype=torch.uint8).long()
    split = int(len(data) * 0.9)
    train, val = data[:split], data[split:]
    arch = Arch("dense", hidden_size=args.width, num_layers=args.layers, num_heads=max(1, args.width // 64),
                num_kv_heads=max(1, args.width // 64), intermediate_size=4 * args.width, max_seq_len=args.context)
    model = AutoModelForCausalLM.from_config(hf_config(arch, vocab_size=256)).to(args.device)
    objective = CausalLMObjective(model)
    opt = torch.optim.AdamW(objective.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.1)
    ones = torch.ones(args.batch, args.context, dtype=torch.long, device=args.device)
    positions = torch.arange(args.context, device=args.device).expand(args.batch, -1)

    def batch(source: torch.Tensor, generator=None):
        starts = torch.randint(len(source) - args.context, (args.batch,), generator=generator)
        ids = torch.stack([source[s:s + args.context] for s in starts]).to(args.device)
        return {"input_ids": ids, "segment_ids": ones, "position_ids": positions, "loss_mask": ones}

    def val_bpb(n: int = 50) -> float:
        g = torch.Generator().manual_seed(1)
        objective.eval()
        with torch.no_grad():
            losses = [float(objective(**batch(val, g))) for _ in range(n)]
        objective.train()
        return sum(losses) / len(losses) / math.log(2)

    budget = args.minutes * 60
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(
            math.pi * min(1.0, (time.perf_counter() - start) / budget))))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = objective(**batch(train))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    bpb = val_bpb()
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.path}: {len(data):,} bytes, model {args.layers}x{args.width} ({params / 1e6:.2f}M params), "
          f"context {args.context}, batch {args.batch}")
    print(f"{step} steps in {args.minutes:.1f} min on {args.device} ({args.threads} threads)")
    print(f"validation: {bpb:.3f} bits/byte = {bpb * math.log(2):.3f} nats/byte "
          f"(nanoGPT CPU reference: 1.88 nats/char = 2.71 bits/char)")


if __name__ == "__main__":
    main()
