"""The single DeepSpeed config builder: from the spec's train/optim sections and the device.

Precision is a capability switch, not a fork: bf16 where the GPU supports it, fp32 on CPU
(DeepSpeed's CPU accelerator with gloo). The optimizer is created by the trainer (torch
AdamW, or DeepSpeed's CPU Adam when optimizer state is offloaded), so the config carries
no optimizer section.
"""

from __future__ import annotations

from typing import Any

from forge_ray.spec.sections import TrainSpec


def choose_precision(train: TrainSpec) -> str:
    """``fp32`` or ``bf16``: ``auto`` picks bf16 only on a CUDA device that supports it."""
    if train.precision != "auto":
        return train.precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def build_ds_config(train: TrainSpec, world_size: int, grad_clip: float, precision: str) -> dict[str, Any]:
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
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config
