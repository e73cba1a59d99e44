"""DeepSpeed internals used by the export of a ZeRO-3 run (:mod:`forge_ray.train.export`)."""

from __future__ import annotations

CHECKED = {"deepspeed": "0.19"}


def zero3_full_state_dict(engine) -> dict:
    """The whole model's 16-bit state dict on rank 0 (a collective: every rank calls it),
    gathered from the ZeRO-3 partitions in memory. DeepSpeed's public route,
    ``save_16bit_model``, writes a file first; the export needs the tensors."""
    return engine._zero3_consolidated_16bit_state_dict()
