"""``engine: openrlhf`` on CPU: our RL spec becomes OpenRLHF's train_ppo_ray arguments, and the
generated reward file applies our reward functions the way OpenRLHF calls it."""

from __future__ import annotations

import importlib.util

from forge_ray.rl.openrlhf import command, reward_script, train_args
from forge_ray.spec import build_spec

GRPO = {"kind": "rl", "name": "g", "policy": "sft", "algo": "grpo", "engine": "openrlhf",
        "prompts": [{"path": "p.jsonl", "format": "prompt_answer"}], "reward_funcs": ["contains_answer"],
        "rollout": {"n_samples": 8, "temperature": 1.0, "max_new_tokens": 24, "num_engines": 2, "tensor_parallel": 2,
                    "gpus_per_engine": 1},
        "optim": {"lr": 1e-4, "warmup_steps": 5}, "kl_coef": 0.01, "kl_estimator": "k3", "prompts_per_step": 16,
        "micro_batch_size": 4, "max_steps": 25, "resources": {"num_workers": 4, "gpus_per_worker": 1},
        "colocate": {"policy_reference": True}}


def _args(spec: dict, **kw) -> dict:
    flat = train_args(build_spec(spec), "/m/policy", "/runs/g/prompts.jsonl", "/runs/g/openrlhf", 60, **kw)
    out, key = {}, None
    for item in flat:
        if item.startswith("--"):
            key = item[2:]
            out[key] = True
        elif out[key] is True:
            out[key] = item
        else:
            out[key] = [out[key], item] if not isinstance(out[key], list) else out[key] + [item]
    return out


def test_grpo_spec_translates_to_train_ppo_ray():
    a = _args(GRPO, reward_script_path="/runs/g/reward.py")
    assert a["advantage_estimator"] == "group_norm" and a["use_kl_loss"] is True and a["kl_estimator"] == "k3"
    assert (a["n_samples_per_prompt"], a["rollout_batch_size"], a["train_batch_size"]) == ("8", "16", "128")
    assert a["num_episodes"] == "9"  # 60 prompts / 16 per step = 3 steps an episode; 25 steps need 9
    assert (a["vllm_num_engines"], a["vllm_tensor_parallel_size"]) == ("2", "2")
    assert a["actor_num_gpus_per_node"] == "4" and a["colocate_actor_ref"] is True and "colocate_all_models" not in a
    assert a["eps_clip_low_high"] == ["0.2", "0.2"] and a["actor_learning_rate"] == "0.0001"
    assert a["remote_rm_url"] == "/runs/g/reward.py" and "critic_pretrain" not in a and a["bf16"] is True
    assert a["input_key"] == "prompt" and a["label_key"] == "answer" and a["apply_chat_template"] is True


def test_ppo_gets_a_critic_and_a_reward_model():
    spec = {**GRPO, "algo": "ppo", "reward_funcs": [], "reward_model": "rm"}
    a = _args(spec, reward_model_dir="/m/rm")
    assert a["advantage_estimator"] == "gae" and a["critic_pretrain"] == "/m/policy" and a["reward_pretrain"] == "/m/rm"
    assert "use_kl_loss" not in a and "remote_rm_url" not in a
    assert command(["--pretrain", "/a b"]).endswith("--pretrain '/a b'")


def test_generated_reward_file_scores_like_our_reward(tmp_path):
    path = tmp_path / "reward.py"
    path.write_text(reward_script(build_spec(GRPO)))
    module_spec = importlib.util.spec_from_file_location("reward", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    prompts = ["<user>Who leads Team Otter?<assistant>", "<user>Where is Team Lynx?<assistant>"]
    queries = [prompts[0] + "Team Otter is led by Mira Dolan.", prompts[1] + "It is in Oldbridge."]
    out = module.reward_func(queries, prompts, ["Mira Dolan", "Northvale"])
    assert out["rewards"].tolist() == [1.0, 0.0]
