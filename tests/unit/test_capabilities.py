"""Capability switches: which precision, attention kernel and transport each device gets,
what is refused, and that the GPU attention path computes what the CPU path computes."""

import pytest
import torch

from forge_ray.train.capabilities import select


def test_auto_follows_the_device():
    gpu = select(cuda=True, bf16_supported=True, flex_available=True)
    assert (gpu.device, gpu.precision, gpu.attention, gpu.pin_memory, gpu.backend) == ("cuda", "bf16", "flex", True, "nccl")
    old_gpu = select(cuda=True, bf16_supported=False, flex_available=False)  # pre-Ampere, older torch
    assert (old_gpu.precision, old_gpu.attention) == ("fp32", "sdpa")
    cpu = select(cuda=False, flex_available=True)
    assert (cpu.device, cpu.precision, cpu.attention, cpu.pin_memory, cpu.backend) == ("cpu", "fp32", "sdpa", False, "gloo")
    assert cpu.dtype == torch.float32 and gpu.dtype == torch.bfloat16


def test_explicit_choices_are_kept_or_refused_by_name():
    assert select("fp32", "sdpa", True, cuda=True, bf16_supported=True, flex_available=True).precision == "fp32"
    assert select("auto", "eager", cuda=False).attention == "eager"
    with pytest.raises(ValueError, match="train.precision: bf16 needs a CUDA device"):
        select("bf16", cuda=False)
    with pytest.raises(ValueError, match="train.attention: flex needs CUDA"):
        select("auto", "flex", cuda=False, flex_available=True)


def test_gpu_memory_estimate_counts_bf16_and_no_attention_scores():
    from forge_ray.models.registry import estimate, resolve
    from forge_ray.spec.sections import ModelSpec

    arch = resolve(ModelSpec(preset="1b"))
    cpu = estimate(arch, 32000, 2048, 8, 1)
    gpu = estimate(arch, 32000, 2048, 8, 1, bytes_per_act=2, fused_attention=True)
    # measured on an H200 (bench/RESULTS.md): 52 GiB peak for this shape in the plain bf16 loop
    assert 40 < gpu.memory_gb["zero0"] < 60
    assert cpu.activation_gb > 2.5 * gpu.activation_gb


@pytest.mark.slow
def test_flex_block_mask_gives_the_dense_mask_logits():
    """FlexAttention (the CUDA choice) over the document block mask equals SDPA over the dense
    mask (the CPU choice) on packed rows: the same model either way (flex runs on CPU too,
    compiled, ~20 s)."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.objectives import causal_logits

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(resolve(ModelSpec(preset="tiny")), 512, 1, 2, 0)).eval()
    seg = torch.tensor([[1] * 50 + [2] * 60 + [0] * 18, [1] * 128])
    pos = torch.cat([torch.cat([torch.arange(50), torch.arange(60), torch.zeros(18, dtype=torch.long)])[None],
                     torch.arange(128)[None]])
    ids = torch.randint(3, 512, (2, 128))
    with torch.no_grad():
        dense, _ = causal_logits(model, ids, seg, pos)
        model.set_attn_implementation("flex_attention")
        flex, _ = causal_logits(model, ids, seg, pos)
    real = (seg[:, :-1] != 0)
    assert torch.allclose(dense[real], flex[real], atol=1e-4)
    # and the mask matters: document 2 does not see document 1
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        joined, _ = causal_logits(model, ids, torch.where(seg == 2, 1, seg), torch.arange(128).expand(2, -1))
    assert not torch.allclose(joined[0, 60:100], dense[0, 60:100], atol=1e-3)


@pytest.mark.slow
def test_compiled_layers_compute_the_eager_loss_and_gradients_under_the_same_names():
    """``train.compile`` on CPU (inductor's C++ kernels): the same loss and gradients as eager
    on packed rows with a document mask, and the same parameter names, so a compiled run's
    checkpoints and exports are an eager run's."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.capabilities import apply
    from forge_ray.train.objectives import CausalLMObjective

    torch.manual_seed(0)
    config = hf_config(resolve(ModelSpec(preset="tiny", num_layers=1)), 512, 1, 2, 0)  # one layer: one compile
    eager = AutoModelForCausalLM.from_config(config)
    compiled = AutoModelForCausalLM.from_config(config)
    compiled.load_state_dict(eager.state_dict())
    names = [n for n, _ in compiled.named_parameters()]
    apply(eager, select(cuda=False))
    apply(compiled, select("auto", "auto", True, cuda=False))
    assert [n for n, _ in compiled.named_parameters()] == names
    seg = torch.tensor([[1] * 30 + [2] * 34, [1] * 64])
    batch = {"input_ids": torch.randint(3, 512, (2, 64)), "segment_ids": seg, "loss_mask": torch.ones(2, 64),
             "position_ids": torch.cat([torch.cat([torch.arange(30), torch.arange(34)])[None], torch.arange(64)[None]])}
    losses = []
    for model in (eager, compiled):
        loss = CausalLMObjective(model)(**batch)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_experts_run_grouped_where_torch_can_and_eager_is_kept_as_the_reference():
    assert select(cuda=False).experts == "grouped"  # this torch has a grouped matmul
    assert select(cuda=False, grouped_mm_available=False).experts == "eager"
    assert select("auto", "auto", False, "eager", cuda=True).experts == "eager"
    with pytest.raises(ValueError, match="train.experts: grouped needs torch's grouped matmul"):
        select("auto", "auto", False, "grouped", cuda=False, grouped_mm_available=False)


def test_grouped_experts_compute_the_reference_loop_loss_and_gradients():
    """The grouped expert kernel (tokens sorted by expert, one grouped matmul per projection)
    against transformers' loop over experts, on packed rows with the router's load-balancing
    and z-losses: the same loss, router statistics and gradients under the same names."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.capabilities import apply
    from forge_ray.train.objectives import CausalLMObjective

    torch.manual_seed(0)
    arch = resolve(ModelSpec(preset="tiny-moe", num_experts=8, experts_per_token=2))
    models = {}
    for kernel in ("eager", "grouped"):
        models[kernel] = AutoModelForCausalLM.from_config(hf_config(arch, 512, 1, 2, 0))
        apply(models[kernel], select("auto", "auto", False, kernel, cuda=False))
    models["grouped"].load_state_dict(models["eager"].state_dict())
    assert {m.config._experts_implementation for m in models.values()} == {"eager", "grouped_mm"}
    seg = torch.tensor([[1] * 30 + [2] * 34, [1] * 64])
    batch = {"input_ids": torch.randint(3, 512, (2, 64)), "segment_ids": seg, "loss_mask": torch.ones(2, 64),
             "position_ids": torch.cat([torch.cat([torch.arange(30), torch.arange(34)])[None], torch.arange(64)[None]])}
    results = {}
    for kernel, model in models.items():
        objective = CausalLMObjective(model, aux_coef=0.01, z_coef=0.001)
        loss = objective(**batch)
        loss.backward()
        results[kernel] = (loss.detach(), objective.stats["aux_loss"], objective.stats["expert_load"])
    (loss_e, aux_e, load_e), (loss_g, aux_g, load_g) = results["eager"], results["grouped"]
    assert torch.allclose(loss_e, loss_g, atol=1e-5) and torch.allclose(aux_e, aux_g, atol=1e-6)
    assert load_e == load_g  # the same routing: every token went to the same experts
    grads = dict(models["eager"].named_parameters())
    for name, p in models["grouped"].named_parameters():
        assert torch.allclose(p.grad, grads[name].grad, atol=1e-6, rtol=1e-4), name
