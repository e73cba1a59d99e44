"""`forge import PATH --plan`: parameters counted exactly from a config alone (the published
sizes of Llama 3 8B/70B, Qwen2.5 32B and Mixtral 8x7B), memory per GPU by ZeRO stage and
offload, and the fewest GPUs — each the least that fits."""

from __future__ import annotations

import json

import pytest

from forge_ray.models.import_plan import GB, OVERHEAD_GB, plan, states_gb

LLAMA = dict(vocab_size=128256, num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192,
             architectures=["LlamaForCausalLM"])


def _configs():
    from transformers import LlamaConfig, MixtralConfig, Qwen2Config

    return {
        "llama3-8b": (LlamaConfig(**{**LLAMA, "num_attention_heads": 32}, hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32), 8_030_261_248),
        "qwen2.5-32b": (Qwen2Config(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                                    num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False,
                                    architectures=["Qwen2ForCausalLM"]), 32_763_876_352),
        "llama3-70b": (LlamaConfig(**LLAMA, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80),
                       70_553_706_496),
        "mixtral-8x7b": (MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                                       num_experts_per_tok=2, architectures=["MixtralForCausalLM"]), 46_702_792_704),
    }


@pytest.mark.parametrize("name", ["llama3-8b", "qwen2.5-32b", "llama3-70b", "mixtral-8x7b"])
def test_parameters_are_the_published_counts_and_each_minimum_is_the_least_that_fits(name):
    config, published = _configs()[name]
    p = plan(config, gpu_gb=80, seq_len=4096, micro_batch=1, host_gb=200)
    assert p.params == published
    layer_bytes = 2 * p.params / config.num_hidden_layers
    for row in p.rows:
        if row.min_gpus is None:
            continue

        def fits(n, row=row):
            gpu, host = states_gb(row.zero_stage, row.offload, p.params, n, layer_bytes)
            return gpu + p.activation_gb + OVERHEAD_GB <= 80 and host <= 200

        assert fits(row.min_gpus) and (row.min_gpus == 1 or not fits(row.min_gpus - 1)), row
    zero3 = next(r for r in p.rows if (r.zero_stage, r.offload) == (3, "none"))
    assert zero3.min_gpus >= 16 * p.params / GB / 80  # the model states alone need that many


def test_bigger_models_need_more_gpus_and_moe_counts_its_active_parameters():
    plans = {name: plan(config) for name, (config, _) in _configs().items()}
    fewest = {name: min(r.min_gpus for r in p.rows if r.offload == "none" and r.min_gpus) for name, p in plans.items()}
    assert fewest["llama3-8b"] < fewest["qwen2.5-32b"] < fewest["llama3-70b"]
    assert plans["llama3-70b"].best_of([r for r in plans["llama3-70b"].rows if r.offload != "none"]).min_gpus \
        < fewest["llama3-70b"]  # offloading the optimizer to host memory saves GPUs
    mixtral = plans["mixtral-8x7b"]
    assert 12.5e9 < mixtral.active_params < 13.0e9  # Mistral's "12.9 B active" (2 of 8 experts)


def test_the_cli_plans_from_a_config_json_alone_and_refuses_remote_code(tmp_path, capsys):
    from forge_ray.cli import main

    config, _ = _configs()["llama3-8b"]
    (tmp_path / "config.json").write_text(config.to_json_string())
    assert main(["import", str(tmp_path), "--plan", "--gpu-gb", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 8_030_261_248 and out["gpu_gb"] == 40
    assert main(["import", str(tmp_path), "--plan"]) == 0
    text = capsys.readouterr().out
    assert "8.03 B parameters" in text and "fewest GPUs without offload" in text
    (tmp_path / "config.json").write_text(json.dumps({**json.loads(config.to_json_string()), "auto_map": {"x": "y"}}))
    assert main(["import", str(tmp_path), "--plan"]) == 2
    assert "auto_map asks for remote code" in capsys.readouterr().err
    assert main(["import", str(tmp_path)]) == 2  # no --name, no --plan
    assert "--name NAME" in capsys.readouterr().err
