"""RL placement rules without a cluster: colocation crowding, the weight-sync path chosen,
and the spec checks that refuse impossible GPU layouts naming the key."""

from __future__ import annotations

import pytest

from forge_ray.spec import SpecError, build_spec

BASE = {"kind": "rl", "name": "r", "policy": "sft", "prompts": [{"path": "p.jsonl", "format": "prompt_answer"}],
        "reward_funcs": ["contains_answer"]}


def rl(**over):
    return build_spec({**BASE, **over})


def problems(**over) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        rl(**over)
    return {p.path: str(p) for p in exc.value.problems}


def test_crowd_counts_the_roles_on_the_shared_bundle():
    from forge_ray.rl.placement import crowd

    assert crowd(rl()) == 1
    assert crowd(rl(colocate={"policy_reference": True})) == 2
    # all: policy + reference + 2 engines on bundle 0 of 1 (GRPO: no critic)
    assert crowd(rl(colocate={"all": True}, rollout={"num_engines": 2})) == 4
    # PPO with a reward model, 2 workers sharing 2 engines: policy, reference, critic, 1 engine, reward model
    assert crowd(rl(algo="ppo", reward_model="rm", colocate={"all": True}, rollout={"num_engines": 2},
                    resources={"num_workers": 2})) == 5


def test_weight_sync_is_nccl_only_with_own_gpus():
    assert rl().sync_method() == "blob"
    gpu = dict(resources={"gpus_per_worker": 1}, rollout={"gpus_per_engine": 1})
    assert rl(**gpu).sync_method() == "nccl"
    assert rl(**gpu, colocate={"all": True}).sync_method() == "blob"  # two NCCL ranks cannot share a GPU
    assert rl(**gpu, weight_sync="blob").sync_method() == "blob"


def test_impossible_gpu_layouts_are_refused_by_key():
    assert "gpus_per_engine" in problems(rollout={"tensor_parallel": 2})["rollout.tensor_parallel"]
    assert "nccl needs GPUs" in problems(weight_sync="nccl")["weight_sync"]
    assert "critic" in problems(colocate={"critic_reward": True})["colocate.critic_reward"]
    p = problems(rollout={"tensor_parallel": 2, "gpus_per_engine": 1}, colocate={"all": True})
    assert "tensor_parallel: 1" in p["colocate.all"]


def test_cut_at_stop_ends_with_the_token_that_completes_the_string():
    from forge_ray.rl.rollout import cut_at_stop

    vocab = {1: "The", 2: " answer", 3: " is", 4: " 4", 5: ".\n", 6: "Q", 7: ":"}

    def text(tokens):
        return "".join(vocab[t] for t in tokens)
    assert cut_at_stop([1, 2, 3, 4, 5, 6, 7, 1], ["\nQ:"], text) == [1, 2, 3, 4, 5, 6, 7]
    assert cut_at_stop([1, 2, 3, 4, 5], ["\nQ:"], text) == [1, 2, 3, 4, 5]  # no stop: untouched
    assert cut_at_stop([1, 2, 3, 4, 5, 6], ["is", "\n"], text) == [1, 2, 3]  # the earliest of several
    assert cut_at_stop([1, 2], [], text) == [1, 2]


def test_nccl_weight_buckets_round_trip_and_respect_dtype_and_size():
    """The GPU sync's bucket plan (computed alike on both sides) and its packing, on CPU."""
    import torch

    from forge_ray.rl.rollout.nccl_sync import pack, plan_buckets, unpack

    tensors = {"a": torch.randn(4, 8), "b": torch.randn(8), "c": torch.randn(3, 3).to(torch.bfloat16),
               "d": torch.randn(64, 64), "e": torch.randn(2)}
    metas = [(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in tensors.items()]
    buckets = plan_buckets(metas, bucket_bytes=200)
    assert buckets == [[0, 1], [2], [3], [4]]  # a+b fit in 160 bytes; c is bf16; d (16 KiB) travels alone
    received = {}
    for bucket in buckets:
        part = [metas[i] for i in bucket]
        flat = pack([tensors[m[0]] for m in part])
        received.update(dict(unpack(flat.clone(), part)))
    assert received.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(received[name], t) and received[name].dtype == t.dtype


def test_a_run_that_asks_for_more_cpus_than_the_cluster_has_is_refused_role_by_role():
    from forge_ray.rl.placement import cpu_demand, room_problems

    two_cpus = [{"CPU": 2.0}]
    fits = rl(resources={"num_workers": 1, "cpus_per_worker": 1}, rollout={"cpus_per_engine": 0.5},
              reference_cpus=0.25)
    assert sum(cpu_demand(fits).values()) == 1.75 and room_problems(fits, two_cpus) == []
    too_big = rl(resources={"num_workers": 2, "cpus_per_worker": 0.5}, reference_cpus=0.25)  # engine: 1 CPU
    (problem,) = room_problems(too_big, two_cpus)
    assert problem.path == "resources" and "2.25 CPUs" in str(problem) and "the cluster has 2" in str(problem)
    assert "rollout engines (rollout.num_engines × cpus_per_engine) 1" in str(problem)
    assert "cpus_per_engine" in problem.hint
    # colocated, every role shares the policy's bundles: only they count
    assert room_problems(rl(colocate={"all": True}, resources={"num_workers": 2, "cpus_per_worker": 1}),
                         two_cpus) == []
    assert room_problems(too_big, []) == []  # no cluster to ask: nothing to say


def test_forge_validate_refuses_rl_roles_the_cluster_cannot_hold(monkeypatch, tmp_path):
    """`forge validate` (and the UI/MCP that call it) says before submission what the run's
    start would: the roles' CPUs against the cluster's (the cluster read is the boundary here)."""
    from forge_ray import preflight
    from forge_ray.train import preflight as train_preflight

    monkeypatch.setattr(train_preflight, "cluster_nodes", lambda address=None: [{"CPU": 2.0}])
    spec = {**BASE, "resources": {"num_workers": 2, "cpus_per_worker": 0.5}, "reference_cpus": 0.25}
    report = preflight.validate(spec, storage=str(tmp_path), check_inputs=False)
    assert not report.ok
    assert [e["path"] for e in report.errors] == ["resources"] and "2.25 CPUs" in report.errors[0]["message"]
    fits = {**spec, "rollout": {"cpus_per_engine": 0.5}}
    assert preflight.validate(fits, storage=str(tmp_path), check_inputs=False).ok
