"""What a training worker builds before its first step: the model (fresh, from a base run,
with LoRA or a grown vocabulary) and the objective the loop optimises for the stage kind (the
optimizer, schedule and engine come from :mod:`forge_ray.distributed.engine`)."""

from __future__ import annotations

import torch

from forge_ray.train.job import TrainJob
from forge_ray.train.objectives import Objective


def build_model(job: TrainJob) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if job.vlm is not None:  # image+text: a LLaVA-layout model around a language model
        from forge_ray.vlm.model import build_vlm, freeze

        model = build_vlm(job)
        freeze(model, list(job.vlm.freeze))
    elif job.spec.kind == "reward_model":  # backbone + a freshly initialised scalar head
        torch.manual_seed(job.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            job.init_model_dir, num_labels=1, pad_token_id=job.token_ids.pad_id, use_safetensors=True,
            trust_remote_code=False, dtype=torch.float32)
    elif job.init_model_dir:
        model = AutoModelForCausalLM.from_pretrained(job.init_model_dir, use_safetensors=True,
                                                     trust_remote_code=False, dtype=torch.float32)
        if job.vocab_pieces:  # domain tokens: rows from their old pieces (checkpoints hold the grown size)
            from forge_ray.models.vocab import grow_embeddings

            grow_embeddings(model, job.token_ids.vocab_size, job.vocab_pieces)
    else:
        from forge_ray.models.registry import hf_config

        torch.manual_seed(job.seed)
        model = AutoModelForCausalLM.from_config(hf_config(job.arch, **job.token_ids.as_kwargs()), dtype=torch.float32)
    if job.lora is not None:
        from peft import LoraConfig, get_peft_model

        from forge_ray.models.families import lora_targets

        lora = job.lora
        model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules) or lora_targets(model.config)))
    if job.spec.train.activation_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def build_objective(job: TrainJob, model: torch.nn.Module, byte_table: torch.Tensor) -> Objective:
    """What the step loop optimises, by stage kind (``byte_table``: each token's UTF-8 bytes,
    for validation bits-per-byte of the language-model objectives)."""
    kind, pad_id = job.spec.kind, job.token_ids.pad_id
    if kind == "dpo":
        from transformers import AutoModelForCausalLM

        from forge_ray.train.preference import DPOObjective

        reference = AutoModelForCausalLM.from_pretrained(job.init_model_dir, use_safetensors=True,
                                                         trust_remote_code=False, dtype=torch.float32)
        spec = job.spec
        return DPOObjective(model, reference, pad_id, spec.beta, spec.loss, spec.label_smoothing, spec.sft_coef)
    if kind == "reward_model":
        from forge_ray.train.preference import RewardObjective

        return RewardObjective(model, pad_id)
    if job.vlm is not None:
        from forge_ray.vlm.objective import VLMObjective

        return VLMObjective(model, byte_table)
    from forge_ray.train.objectives import CausalLMObjective

    return CausalLMObjective(model, byte_table, job.arch.router_aux_loss_coef, job.arch.router_z_loss_coef)
