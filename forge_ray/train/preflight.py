"""Refuse a training spec that cannot fit before any worker starts, and say which knob to turn."""

from __future__ import annotations

from forge_ray.models.registry import Estimate
from forge_ray.spec import SpecError
from forge_ray.spec.typed import Problem


def available_gb_per_worker(gpus_per_worker: float, num_workers: int, memory_per_worker_gb: float | None) -> float:
    """GPU memory per worker on GPU specs; else the reserved memory, else host RAM / workers."""
    if gpus_per_worker > 0:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024**3 * min(gpus_per_worker, 1.0)
    if memory_per_worker_gb:
        return memory_per_worker_gb
    import psutil

    return psutil.virtual_memory().total / 1024**3 / max(num_workers, 1)


def check_fits(est: Estimate, spec) -> None:
    train, res = spec.train, spec.resources
    need = est.memory_gb[f"zero{train.zero_stage}"]
    have = available_gb_per_worker(res.gpus_per_worker, res.num_workers, res.memory_per_worker_gb)
    if need <= have:
        return
    better = [f"train.zero_stage={s}" for s in range(train.zero_stage + 1, 4) if est.memory_gb[f"zero{s}"] <= have]
    states_gb = 16 * est.params / 1024**3
    if not better and have > est.activation_gb:
        workers = int(states_gb / (have - est.activation_gb)) + 1
        better = [f"train.zero_stage=3 with resources.num_workers>={workers}"]
    hints = better[:1] + ["more resources.num_workers" if train.zero_stage else "",
                          "train.activation_checkpointing=true" if not train.activation_checkpointing else "",
                          "a smaller train.micro_batch_size"]
    raise SpecError([Problem(
        "model", f"needs about {need:.1f} GB per worker at ZeRO stage {train.zero_stage} "
                 f"({est.params / 1e6:.1f}M parameters, {est.activation_gb:.1f} GB activations) "
                 f"but a worker has {have:.1f} GB",
        "try " + ", or ".join(h for h in hints if h))])
