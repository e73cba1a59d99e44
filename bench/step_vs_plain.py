"""forge's training step against a minimal nanoGPT-style loop, same shape, same tokens, one
process: how much the model path (transformers' Llama block, the packed-document mask, the
objective) and the engine (DeepSpeed, the trainer's clip and bookkeeping) cost per step.

The plain side is a GPT written here in ~40 lines the way nanoGPT's ``model.py`` is (fused
QKV projection, ``scaled_dot_product_attention(is_causal=True)``, GELU MLP, tied embeddings,
AdamW, clip): what a researcher would write by hand. The forge side is what a worker runs:
the registry's model for the same width/depth/heads, ``CausalLMObjective`` (document mask
from ``segment_ids``, masked cross-entropy) inside the engine from
``forge_ray.distributed.engine.build_engine``, stepped like ``Trainer.train_step`` (clip and
norm, one loss readback). Rows are single documents, so both compute the same attention. The
two alternate step by step and the medians are compared: ratio = plain / forge (1.0 = no
overhead).

``--compile`` measures the compiled paths too: forge with ``train.compile: true`` (each decoder
layer compiled, as the trainer does) against nanoGPT's CPU recipe (``--compile=False``) and
against the plain loops compiled whole the way nanoGPT's default does; the first (warm-up)
step of each, which pays the compile, is reported beside the medians.

CPU:      python bench/step_vs_plain.py [--compile]          (nanoGPT's CPU shape: 4 × 128, 12 × 64 tokens)
One GPU:  python bench/step_vs_plain.py --layers 12 --width 768 --batch 16 --seq-len 1024 --steps 30
Cluster:  a one-device figure (the multi-worker cost is bench/train_overhead.py's)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, layers: int, width: int, heads: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids, targets):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


class LlamaBlock(nn.Module):
    """The architecture forge's dense models have (RMSNorm, rotary positions, SwiGLU, no
    biases), written the nanoGPT way: one QKV and one gate-and-up projection."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.RMSNorm(width, eps=1e-6), nn.RMSNorm(width, eps=1e-6)
        self.qkv, self.proj = nn.Linear(width, 3 * width, bias=False), nn.Linear(width, width, bias=False)
        self.gate_up, self.down = nn.Linear(width, 2 * hidden, bias=False), nn.Linear(hidden, width, bias=False)

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).transpose(1, 3).unbind(2)

        def rotate(z):
            z1, z2 = z.chunk(2, dim=-1)
            return torch.cat((z1 * cos - z2 * sin, z2 * cos + z1 * sin), dim=-1)

        y = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        gate, up = self.gate_up(self.ln2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class PlainLlama(nn.Module):
    def __init__(self, vocab: int, seq_len: int, layers: int, width: int, heads: int, hidden: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(LlamaBlock(width, heads, hidden) for _ in range(layers))
        self.ln = nn.RMSNorm(width, eps=1e-6)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight
        half = width // heads // 2
        angles = torch.outer(torch.arange(seq_len).float(), 10000.0 ** (-torch.arange(half).float() / half))
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, ids, targets):
        x, t = self.tok(ids), ids.shape[1]
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


PLAINS = {"plain_gpt": PlainGPT, "plain_llama": PlainLlama}


def _forge_step(args, caps):
    """The trainer's model, objective and engine on one rank, at the plain loops' shape."""
    from forge_step import build_forge_step

    from forge_ray.models.registry import Arch

    arch = Arch("dense", hidden_size=args.width, num_layers=args.layers, num_heads=args.heads,
                num_kv_heads=args.heads, intermediate_size=args.hidden, max_seq_len=args.seq_len,
                tie_embeddings=True)
    return build_forge_step(arch, args.vocab, args.batch, args.seq_len, caps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=None,
                   help="SwiGLU width (default 8/3 × width rounded to 8: the GPT block's parameters)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="also time forge with train.compile and the plain loops compiled whole")
    args = p.parse_args()
    args.hidden = args.hidden or -(-8 * args.width // 3 // 8) * 8
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29533"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import torch.distributed as dist

    from forge_ray.train import capabilities

    caps = capabilities.detect("auto", "auto", False)
    dist.init_process_group(caps.backend, rank=0, world_size=1)
    torch.manual_seed(0)
    device = caps.device
    plains = {name: cls(*_init_args(name, args)) for name, cls in PLAINS.items()}
    steps = {name: _plain_step(model.to(device), caps) for name, model in plains.items()}
    steps["forge"], forge_params = _forge_step(args, caps)
    if args.compile:
        torch.manual_seed(0)
        compiled = {f"{name}_compiled": torch.compile(cls(*_init_args(name, args)).to(device))
                    for name, cls in PLAINS.items()}
        steps.update({name: _plain_step(model, caps) for name, model in compiled.items()})
        steps["forge_compiled"], _ = _forge_step(args, replace(caps, compile=True))
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in steps}
    first: dict[str, float] = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(args.warmup + args.steps):
        # the same tokens for all: nanoGPT reads seq_len + 1 tokens for seq_len predictions
        ids = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=g)
        for name, fn in steps.items():
            x = ids[:, :-1].contiguous() if name.startswith("forge") else ids
            sync()
            t = time.perf_counter()
            fn(x)
            sync()
            if i == 0:
                first[name] = round(time.perf_counter() - t, 2)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)
    ms = {name: round(1000 * statistics.median(v), 2) for name, v in times.items()}
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in plains.items()}
    print(json.dumps({"shape": {"layers": args.layers, "width": args.width, "heads": args.heads, "hidden": args.hidden,
                                "batch": args.batch, "seq_len": args.seq_len, "vocab": args.vocab},
                      "device": device, "threads": torch.get_num_threads(), "steps": args.steps, "median_ms": ms,
                      "ratio_plain_llama_over_forge": round(ms["plain_llama"] / ms["forge"], 3),
                      "ratio_plain_gpt_over_forge": round(ms["plain_gpt"] / ms["forge"], 3),
                      **({"ratio_plain_gpt_over_forge_compiled": round(ms["plain_gpt"] / ms["forge_compiled"], 3),
                          "ratio_plain_gpt_compiled_over_forge_compiled":
                              round(ms["plain_gpt_compiled"] / ms["forge_compiled"], 3),
                          "ratio_plain_llama_compiled_over_forge_compiled":
                              round(ms["plain_llama_compiled"] / ms["forge_compiled"], 3)} if args.compile else {}),
                      "first_step_s": first, "params": {**params, "forge": forge_params}}))


def _init_args(name: str, args) -> tuple:
    common = (args.vocab, args.seq_len, args.layers, args.width, args.heads)
    return common + ((args.hidden,) if name == "plain_llama" else ())


def _plain_step(model: nn.Module, caps):
    """nanoGPT's step: bf16 autocast where the device has it, clip at 1, AdamW (fused where
    torch has it for the device: the strongest plain loop, not nanoGPT's CUDA-only choice)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    device = caps.device

    def step(ids: torch.Tensor) -> float:
        ids = ids.to(device)
        with torch.autocast(device, dtype=caps.dtype, enabled=caps.precision == "bf16"):
            loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


if __name__ == "__main__":
    main()
