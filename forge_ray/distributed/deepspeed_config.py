"""The single DeepSpeed config builder: from the spec's train/optim sections and the device.

Precision is a capability switch, not a fork: bf16 where the GPU supports it, fp32 on CPU
(DeepSpeed's CPU accelerator with gloo); bf16 by autocast or by DeepSpeed's master weights
depending on the ZeRO stage (``bf16_mode``). Which precision a worker runs in is its
:mod:`~forge_ray.train.capabilities` decision; the optimizer comes from
:mod:`forge_ray.distributed.engine` (torch AdamW, fused on CUDA and CPU, or DeepSpeed's CPU Adam when
optimizer state is offloaded), so the config carries no optimizer section.
"""

from __future__ import annotations

from typing import Any

from forge_ray.spec.sections import TrainSpec


def bf16_mode(zero_stage: int) -> str:
    """How bf16 is done: ``autocast`` (fp32 weights, bf16 matmuls under ``torch.autocast``,
    torch's fused AdamW on the fp32 weights) for ZeRO-0, ``deepspeed`` (bf16 weights with an
    fp32 master copy) for ZeRO ≥ 1. Why: without ZeRO, DeepSpeed wraps a torch optimizer in
    its *unfused* mixed-precision optimizer, which copies gradients and weights between the
    bf16 and fp32 copies one parameter at a time; with ZeRO ≥ 1 its optimizer works on flat
    buffers and partitions the master copy, which is what ZeRO is for."""
    return "autocast" if zero_stage == 0 else "deepspeed"


def build_ds_config(train: TrainSpec, world_size: int, grad_clip: float, precision: str,
                    mode: str = "deepspeed") -> dict[str, Any]:
    """``mode``: how bf16 is done when ``precision`` is bf16 (see ``bf16_mode``)."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage >= 1 and train.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": precision == "bf16"}
    if train.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=0)
        if train.offload == "all":
            zero["offload_param"] = {"device": "cpu", "pin_memory": precision == "bf16"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.micro_batch_size * train.grad_accum * world_size,
        "gradient_clipping": grad_clip if grad_clip > 0 else 0.0,
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # forge writes its own metrics
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if precision == "bf16" and mode == "autocast":
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config
