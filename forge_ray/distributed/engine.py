"""One engine factory for everything that trains: the step loop's workers and the RL policy
and critic. Parameter groups, the optimizer (fused AdamW where the device has it, DeepSpeed's
CPU Adam when optimizer state is offloaded), the learning-rate schedule, how bf16 is done and
who clips the gradients are decided here once, from the spec and the worker's
:class:`~forge_ray.train.capabilities.Capabilities`, so an RL policy trains with exactly the
numerics of an SFT run of the same spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from forge_ray.spec.sections import OptimSpec, TrainSpec

if TYPE_CHECKING:
    from forge_ray.train.capabilities import Capabilities


@dataclass
class Engine:
    engine: Any  # deepspeed.DeepSpeedEngine around the objective
    scheduler: Any  # the learning-rate scheduler, or None without a schedule
    own_clip: bool  # clip_and_norm clips (else DeepSpeed does, inside step)
    bf16_mode: str | None  # "autocast" | "deepspeed" under bf16, None in fp32


def lr_lambda(optim: OptimSpec, max_steps: int):
    """Warmup, then cosine (or warmup-stable-decay, or constant) down to ``min_lr_ratio``:
    the multiplier of the peak rate at each step."""
    warmup, floor = optim.warmup_steps, optim.min_lr_ratio

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "wsd":
            decay_start = max_steps * (1 - optim.decay_fraction)
            if step < decay_start:
                return 1.0
            return floor + (1 - floor) * max(0.0, (max_steps - step) / max(max_steps - decay_start, 1))
        progress = min(1.0, (step - warmup) / max(max_steps - warmup, 1))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: not on norms, biases or embeddings (decaying an
    embedding pulls rare tokens' rows to zero between their updates). A tied output layer
    shares the embedding's parameter, so it is not decayed either. Frozen parameters are left out."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # each shared parameter once
        if p.requires_grad:
            (decay if p.ndim >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]  # LoRA: no 1-D parameters


def build_optimizer(model: nn.Module, optim: OptimSpec, offload: bool, fused: bool = False):
    """AdamW over :func:`param_groups`; ``fused``: one kernel for all parameters (torch has
    it for CUDA and, since 2.4, for CPU tensors); DeepSpeed's CPU Adam when the optimizer
    state lives on the host."""
    groups = param_groups(model, optim.weight_decay)
    kwargs = dict(lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs, **({"fused": True} if fused else {}))


def clips_itself(zero_stage: int) -> bool:
    """ZeRO-0: every rank holds the whole averaged gradient after ``engine.backward``, so the
    trainer clips it there with one fused norm, which is also the logged one; DeepSpeed's
    ZeRO-0 clip computes a norm it does not keep, and logging it took a second pass over every
    parameter. ZeRO ≥ 1 partitions the gradient, so DeepSpeed clips and reports the norm."""
    return zero_stage == 0


def clip_and_norm(engine, objective, grad_clip: float, own_clip: bool):
    """Global gradient norm before clipping, as a tensor (read it when logging: a readback
    waits for the device). ``own_clip``: clip here; else DeepSpeed clips in ``step`` and the
    norm is DeepSpeed's (ZeRO ≥ 1) or computed from the full gradients (ZeRO-0)."""
    if own_clip:
        grads = [p for p in objective.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(grads, grad_clip if grad_clip > 0 else float("inf"), foreach=True)
    norm = engine.get_global_grad_norm()
    if norm is not None:
        return torch.as_tensor(norm)
    norms = [p.grad.detach().float().norm() for p in objective.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else None


def build_engine(objective: nn.Module, optim: OptimSpec, train: TrainSpec, world: int, caps: Capabilities,
                 max_steps: int | None = None) -> Engine:
    """The DeepSpeed engine for ``objective`` on this worker (``max_steps``: with the spec's
    learning-rate schedule over that many steps; None keeps the rate constant)."""
    import deepspeed

    from forge_ray.distributed.deepspeed_config import bf16_mode, build_ds_config

    offload = train.offload != "none" and train.zero_stage >= 1
    optimizer = build_optimizer(objective, optim, offload, fused=caps.device in ("cuda", "cpu"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim, max_steps)) if max_steps else None
    mode = bf16_mode(train.zero_stage) if caps.precision == "bf16" else None
    own_clip = clips_itself(train.zero_stage)
    config = build_ds_config(train, world, 0.0 if own_clip else optim.grad_clip, caps.precision, mode or "deepspeed")
    engine, _, _, scheduler = deepspeed.initialize(model=objective, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=config, dist_init_required=False)
    return Engine(engine=engine, scheduler=scheduler, own_clip=own_clip, bf16_mode=mode)
