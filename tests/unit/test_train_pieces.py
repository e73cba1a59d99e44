"""The step loop's pieces on their own, each against what it must compute: the learning-rate
schedule, the packed-document masks, the MoE auxiliary losses and the DeepSpeed config."""

from __future__ import annotations

import pytest
import torch

from forge_ray.distributed.deepspeed_config import bf16_mode, build_ds_config
from forge_ray.distributed.engine import lr_lambda
from forge_ray.models.families import document_mask
from forge_ray.spec.sections import OptimSpec, TrainSpec
from forge_ray.train.objectives import load_balancing_loss, router_z_loss, target_mask


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor():
    f = lr_lambda(OptimSpec(warmup_steps=10, min_lr_ratio=0.1, schedule="cosine"), max_steps=110)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay: the cosine's midpoint
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # the floor, also past the end
    decay = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_wsd_holds_the_peak_then_decays_linearly_in_its_last_fraction():
    f = lr_lambda(OptimSpec(warmup_steps=0, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2), max_steps=100)
    assert f(0) == f(50) == f(80) == 1.0
    assert f(90) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


def test_constant_schedule_after_warmup():
    f = lr_lambda(OptimSpec(warmup_steps=2, schedule="constant"), max_steps=10)
    assert [f(s) for s in range(5)] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0])


def test_document_mask_confines_attention_to_earlier_tokens_of_the_same_document():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])  # two packed documents, then padding
    allowed = document_mask(seg)[0, 0]
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],  # document 2's first token sees only itself
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees itself only: its softmax row is not empty (no NaN)
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_target_mask_never_predicts_across_documents_or_into_padding():
    seg = torch.tensor([[1, 1, 1, 2, 2, 0]])
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 1]])  # e.g. SFT: only the answer tokens count
    # prediction t targets token t+1: 1→1 (masked out by loss_mask), 1→1 ok, 1→2 crosses, 2→2 ok, 2→pad
    assert target_mask(loss_mask, seg).tolist() == [[False, True, False, True, False]]


def test_load_balancing_loss_is_one_when_balanced_and_grows_with_collapse():
    experts, top_k = 4, 1
    balanced = torch.eye(experts).repeat(8, 1) * 5  # every expert gets the same share, confidently
    collapsed = torch.zeros(32, experts)
    collapsed[:, 0] = 5  # every token to expert 0
    valid = torch.ones(32, dtype=torch.bool)
    assert float(load_balancing_loss([balanced], top_k, valid)) == pytest.approx(1.0, abs=0.05)
    assert float(load_balancing_loss([collapsed], top_k, valid)) > 3.0


def test_moe_losses_ignore_padding_tokens():
    logits = torch.randn(6, 4)
    valid = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    poisoned = logits.clone()
    poisoned[~valid] = 1e4  # what padding would contribute if it were counted
    assert torch.allclose(load_balancing_loss([logits], 2, valid), load_balancing_loss([poisoned], 2, valid))
    assert torch.allclose(router_z_loss([logits], valid), router_z_loss([poisoned], valid))
    expected = torch.logsumexp(logits[:3], -1).pow(2).mean()
    assert float(router_z_loss([logits], valid)) == pytest.approx(float(expected))


def test_ds_config_batch_arithmetic_and_zero_sections():
    train = TrainSpec(micro_batch_size=4, grad_accum=3, zero_stage=2, offload="optimizer")
    config = build_ds_config(train, world_size=8, grad_clip=1.0, precision="fp32")
    assert config["train_batch_size"] == 4 * 3 * 8 and config["gradient_accumulation_steps"] == 3
    assert config["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": False}}
    assert "bf16" not in config and "torch_autocast" not in config and config["gradient_clipping"] == 1.0
    z3 = build_ds_config(TrainSpec(zero_stage=3, offload="all"), 2, 0.0, "bf16")
    assert z3["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["bf16"] == {"enabled": True} and z3["gradient_clipping"] == 0.0


def test_bf16_is_autocast_without_zero_and_master_weights_with_it():
    assert bf16_mode(0) == "autocast" and bf16_mode(1) == bf16_mode(3) == "deepspeed"
    config = build_ds_config(TrainSpec(zero_stage=0), 1, 1.0, "bf16", bf16_mode(0))
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in config


def test_weight_decay_only_on_weight_matrices_not_norms_biases_or_embeddings():
    from transformers import LlamaConfig, LlamaForCausalLM

    from forge_ray.distributed.engine import build_optimizer, param_groups

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True, attention_bias=True)
    model = LlamaForCausalLM(config)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert "model.embed_tokens.weight" in kept  # tied: the output layer is the same parameter
    assert all("norm" in n or n.endswith("bias") or "embed" in n for n in kept), kept
    assert decayed == {n for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # each once
    optimizer = build_optimizer(model, OptimSpec(lr=1e-3, weight_decay=0.1), offload=False)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_frozen_parameters_are_left_out_of_the_optimizer():
    from torch import nn

    from forge_ray.distributed.engine import param_groups

    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [3]  # bias, norm weight and bias; no matrix left to decay


def test_rows_of_whole_documents_skip_the_mask_and_give_the_masked_logits():
    """One document per row, no padding: the kernel's own causal path (no mask built) computes
    what the document mask would; packed or padded rows keep the mask."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.objectives import causal_logits, whole_documents

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(resolve(ModelSpec(preset="tiny")), 256, 1, 2, 0)).eval()
    ids, pos = torch.randint(3, 256, (2, 32)), torch.arange(32).expand(2, -1)
    whole = torch.tensor([[1] * 32, [7] * 32])
    assert whole_documents(whole)
    assert not whole_documents(torch.tensor([[1] * 16 + [2] * 16, [1] * 32]))
    assert not whole_documents(torch.tensor([[1] * 30 + [0] * 2, [1] * 32]))
    with torch.no_grad():
        fast, _ = causal_logits(model, ids, whole, pos)
        hidden = model.model(input_ids=ids, position_ids=pos, attention_mask=document_mask(whole))
        masked = model.lm_head(hidden.last_hidden_state[:, :-1])
    assert torch.allclose(fast, masked, atol=1e-5)
