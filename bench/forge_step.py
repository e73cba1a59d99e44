"""One forge training step on one rank, for the benches that time it against something else
(``step_vs_plain.py``, ``moe.py``): the registry's model for an :class:`Arch`,
``CausalLMObjective`` (document mask from ``segment_ids``, masked cross-entropy, the MoE
router losses) inside the engine from ``forge_ray.distributed.engine.build_engine``, stepped
like ``Trainer.train_step`` (clip and norm, one loss readback). Not a script: imported.
"""

from __future__ import annotations

import torch


def build_forge_step(arch, vocab: int, batch: int, seq_len: int, caps):
    """``(step, parameters)``: ``step(ids)`` runs one optimizer step on ``ids`` ``[batch, seq_len]``
    (one document per row) and returns the logged loss."""
    from transformers import AutoModelForCausalLM

    from forge_ray.distributed.engine import build_engine, clip_and_norm
    from forge_ray.models.registry import hf_config
    from forge_ray.spec.sections import OptimSpec, TrainSpec
    from forge_ray.train import capabilities
    from forge_ray.train.capabilities import to_device
    from forge_ray.train.objectives import CausalLMObjective

    model = AutoModelForCausalLM.from_config(hf_config(arch, vocab_size=vocab), dtype=torch.float32)
    objective = CausalLMObjective(model, aux_coef=arch.router_aux_loss_coef if arch.arch == "moe" else 0.0,
                                  z_coef=arch.router_z_loss_coef if arch.arch == "moe" else 0.0)
    capabilities.apply(model, caps)
    optim = OptimSpec(lr=1e-3, warmup_steps=0, schedule="constant")
    train = TrainSpec(micro_batch_size=batch, seq_len=seq_len, max_steps=10**6)
    built = build_engine(objective, optim, train, 1, caps, max_steps=train.max_steps)
    engine = built.engine

    def step(ids: torch.Tensor) -> float:
        ones = torch.ones_like(ids)
        rows = to_device({"input_ids": ids, "segment_ids": ones, "loss_mask": ones,
                          "position_ids": torch.arange(ids.shape[1]).expand_as(ids)},
                         objective.batch_keys, engine.device, caps.pin_memory)
        loss = engine(**rows)
        engine.backward(loss)
        clip_and_norm(engine, objective, optim.grad_clip, built.own_clip)
        engine.step()
        return float(objective.logged_loss(loss))

    return step, sum(p.numel() for p in model.parameters())
