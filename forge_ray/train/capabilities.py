"""Capability switches: what this device can do, chosen once, applied by the same code path
on CPU and GPU (no GPU fork of the trainer).

On a CUDA device that supports it the step runs in bf16 (DeepSpeed's bf16 mode: bf16
weights, fp32 master copy), attention runs as FlexAttention over a block mask built from
the packed rows' document ids (cross-document blocks are skipped, not computed and
masked), host batches are pinned and copied asynchronously, and collectives go over NCCL.
On CPU: fp32, SDPA with the same document mask as a dense tensor, gloo. ``torch.compile``
(per decoder layer, as torchtitan does) is opt-in: it pays off on GPUs once a run is long
enough to amortise the minute or two of compiling. Mixture-of-Experts layers run their experts
grouped wherever torch has a grouped matmul (tokens sorted by expert, each expert projection
one grouped GEMM over all experts at once, forward and backward) instead of transformers'
reference loop over experts, which launches a gather, two matmuls and a scatter per expert.

The selection is a pure function of the spec and what the machine reports, so it is tested
on CPU with the GPU facts given as arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

# transformers' names for the attention kernels we choose between
_HF_ATTENTION = {"flex": "flex_attention", "sdpa": "sdpa", "eager": "eager"}


@dataclass(frozen=True)
class Capabilities:
    device: str  # cuda | cpu
    precision: str  # bf16 | fp32
    attention: str  # flex | sdpa | eager
    compile: bool
    pin_memory: bool
    backend: str  # nccl | gloo
    experts: str = "grouped"  # grouped | eager (MoE models only)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


def select(precision: str = "auto", attention: str = "auto", compile: bool = False, experts: str = "auto", *,
           cuda: bool, bf16_supported: bool = False, flex_available: bool = False,
           grouped_mm_available: bool = True) -> Capabilities:
    """The switches for a run: ``auto`` choices follow the device; explicit ones are kept
    unless the device cannot honour them (then a clear error, not a silent fallback)."""
    if precision == "bf16" and not (cuda and bf16_supported):
        raise ValueError("train.precision: bf16 needs a CUDA device that supports it (Ampere or newer); "
                         "use auto or fp32 on this machine")
    if attention == "flex" and not (cuda and flex_available):
        raise ValueError("train.attention: flex needs CUDA and torch.nn.attention.flex_attention; use auto or sdpa")
    if experts == "grouped" and not grouped_mm_available:
        raise ValueError(f"train.experts: grouped needs torch's grouped matmul, which torch {torch.__version__} "
                         "does not have; use auto or eager")
    chosen_precision = precision if precision != "auto" else ("bf16" if cuda and bf16_supported else "fp32")
    chosen_attention = attention if attention != "auto" else ("flex" if cuda and flex_available else "sdpa")
    chosen_experts = experts if experts != "auto" else ("grouped" if grouped_mm_available else "eager")
    return Capabilities(device="cuda" if cuda else "cpu", precision=chosen_precision, attention=chosen_attention,
                        compile=compile, pin_memory=cuda, backend="nccl" if cuda else "gloo", experts=chosen_experts)


def grouped_mm_available() -> bool:
    """torch has a grouped matmul (public ``torch.nn.functional.grouped_mm`` since 2.10, with a
    CPU kernel; ``torch._grouped_mm`` before, used by transformers, not by us)."""
    return hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm")


def detect(precision: str = "auto", attention: str = "auto", compile: bool = False,
           experts: str = "auto") -> Capabilities:
    """:func:`select` with this process's device facts."""
    cuda = torch.cuda.is_available()
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401

        flex = True
    except ImportError:
        flex = False
    return select(precision, attention, compile, experts, cuda=cuda,
                  bf16_supported=cuda and torch.cuda.is_bf16_supported(), flex_available=flex,
                  grouped_mm_available=grouped_mm_available())


def apply(model: torch.nn.Module, caps: Capabilities, attention: bool = True) -> torch.nn.Module:
    """Set the expert kernel (MoE models), the attention kernel and, if asked, compile each
    decoder layer in place (parameter names are unchanged, so checkpoints and exports are the
    same either way). ``attention=False``: a forward that passes HF's own padding mask (the
    reward head) keeps the model's attention kernel and runs uncompiled."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    set_experts(target, caps.experts)
    if not attention:
        return model
    from forge_ray.models.families import attention_kernel

    target.set_attn_implementation(attention_kernel(target.config, _HF_ATTENTION[caps.attention]))
    if caps.compile:
        decoder = target.get_decoder() if hasattr(target, "get_decoder") else target.model
        from forge_ray.compat.torch_dynamo import allow_recompiles

        allow_recompiles(2 * len(decoder.layers) + 8)  # one compiled variant per layer, and room
        for layer in decoder.layers:
            layer.compile()
        for name in ("norm", "rotary_emb"):
            if isinstance(getattr(decoder, name, None), torch.nn.Module):
                getattr(decoder, name).compile()
    return model


#: transformers' names for the expert kernels
_HF_EXPERTS = {"grouped": "grouped_mm", "eager": "eager"}


def set_experts(model: torch.nn.Module, experts: str) -> None:
    """The expert kernel of an MoE model (a dense model has none: nothing to set)."""
    if not any(type(m).__name__.endswith("Experts") for m in model.modules()):
        return
    model.set_experts_implementation(_HF_EXPERTS[experts])


def to_device(batch: dict, keys: tuple[str, ...], device: str | torch.device, pin: bool) -> dict:
    """Token columns as int64, float columns (pixels) as float32, on ``device``; pinned host
    memory makes the copy asynchronous so it overlaps the previous step's kernels."""
    out = {}
    for k in keys:
        arr = np.asarray(batch[k])
        t = torch.as_tensor(arr, dtype=torch.float32 if arr.dtype.kind == "f" else torch.long)
        if pin:
            t = t.pin_memory()
        out[k] = t.to(device, non_blocking=pin)
    return out
