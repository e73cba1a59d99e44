"""Who runs where in an RL run: the roles as Ray actors on placement groups, alone or
colocated (OpenRLHF's ``colocate_actor_ref`` / ``colocate_critic_reward`` /
``colocate_all_models``), and the rollout engines (tensor-parallel on GPUs).

Alone, each role takes its own resources: the policy (and critic) group ``resources`` per
rank, each engine ``rollout.cpus_per_engine``/``gpus_per_engine``, the reference
``reference_cpus``. Colocated roles share the bundles of the group they join and split each
bundle equally, so a colocated run asks the cluster for no more than the policy alone.
"""

from __future__ import annotations

import math
from dataclasses import replace

from forge_ray.rl.algos import ALGORITHMS
from forge_ray.spec.stages import RLStage


def pick_backend(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "vllm"


def crowd(spec: RLStage) -> int:
    """Roles on the most crowded shared bundle (bundle 0 of the policy's group)."""
    co = spec.colocate
    if co.all:
        engines_on_0 = math.ceil(spec.rollout.num_engines / spec.resources.num_workers)
        return 2 + ALGORITHMS[spec.algo].critic + engines_on_0 + bool(spec.reward_model)
    return 2 if co.policy_reference else 1


def cpu_demand(spec: RLStage) -> dict[str, float]:
    """The CPUs each role of the run asks for, as :func:`build_roles` places them (colocated
    roles take nothing beyond the bundles they share)."""
    res, co, r = spec.resources, spec.colocate, spec.rollout
    group = res.num_workers * res.cpus_per_worker
    if co.all:
        return {"policy and every colocated role (resources)": group}
    demand = {"policy (resources.num_workers × cpus_per_worker)": group,
              "rollout engines (rollout.num_engines × cpus_per_engine)": r.num_engines * r.cpus_per_engine}
    if ALGORITHMS[spec.algo].critic:
        demand["critic (resources)"] = group
    if not co.policy_reference:
        demand["reference (reference_cpus)"] = spec.reference_cpus
    if spec.reward_model and not co.critic_reward:
        demand["reward model"] = 0.25
    return demand


def room_problems(spec: RLStage, nodes: list[dict[str, float]]) -> list:
    """A run whose roles ask for more CPUs than the whole cluster has would wait for ever for
    its last actor; say so at once, role by role, with the knobs to turn."""
    from forge_ray.spec.typed import Problem

    demand, have = cpu_demand(spec), sum(n.get("CPU", 0) for n in nodes)
    if not nodes or sum(demand.values()) <= have + 1e-9:
        return []
    asked = ", ".join(f"{role} {cpus:g}" for role, cpus in demand.items())
    return [Problem("resources", f"the RL roles ask for {sum(demand.values()):g} CPUs ({asked}) but the cluster has "
                                 f"{have:g}", "lower rollout.cpus_per_engine, resources.cpus_per_worker or "
                                              "reference_cpus, or colocate roles (colocate.*)")]


def describe(options: dict) -> dict:
    """Where an actor with these Ray options lands (for the manifest): CPUs, GPUs, and its
    placement group and bundle when it has one."""
    out = {"cpus": round(options.get("num_cpus", 0), 4), "gpus": round(options.get("num_gpus", 0), 4)}
    strategy = options.get("scheduling_strategy")
    if strategy is not None:
        out.update(placement_group=strategy.placement_group.id.hex()[:12], bundle=strategy.placement_group_bundle_index)
    return out


def build_roles(spec: RLStage, policy_dir: str, reward_model_dir: str | None):
    import ray

    from forge_ray.rl import rewards
    from forge_ray.rl.controller import Roles
    from forge_ray.rl.objective import CriticLoss, PolicyLoss
    from forge_ray.rl.workers import ActorGroup, Bundles, ReferenceWorker, TrainableRole, TrainableWorker
    from forge_ray.spec.sections import TrainSpec

    algo, res, co = ALGORITHMS[spec.algo], spec.resources, spec.colocate
    loss = PolicyLoss(kind=spec.policy_loss, clip_eps=spec.clip_eps, clip_eps_high=spec.clip_eps_high,
                      dual_clip=spec.dual_clip, kl_loss_coef=0.0 if algo.kl_in_reward else spec.kl_coef,
                      kl_estimator=spec.kl_estimator, entropy_coef=spec.entropy_coef,
                      aggregation=spec.loss_aggregation, norm_length=spec.rollout.max_new_tokens)
    job = TrainableRole(role="policy", model_dir=policy_dir, optim=spec.optim, loss=loss, seed=spec.seed,
                        train=TrainSpec(zero_stage=0, micro_batch_size=spec.micro_batch_size),
                        threads=int(max(1, res.cpus_per_worker)))
    group_args = (res.num_workers, res.cpus_per_worker, res.gpus_per_worker)
    shared = Bundles(*group_args) if (co.all or co.policy_reference) else None
    share = 1 / crowd(spec)
    policy = ActorGroup(TrainableWorker, *group_args, bundles=shared, share=share, job=job)
    layout = {"policy": [describe(policy.bundles.options(i, share)) for i in range(res.num_workers)]}

    critic, critic_bundles, critic_share = None, None, 1.0
    if algo.critic:
        if co.all:
            critic_bundles, critic_share = shared, share
        elif co.critic_reward:
            critic_bundles, critic_share = Bundles(*group_args), 0.5
        critic_job = replace(job, role="critic", loss=CriticLoss(aggregation=spec.loss_aggregation))
        critic = ActorGroup(TrainableWorker, *group_args, bundles=critic_bundles, share=critic_share, job=critic_job)
        layout["critic"] = [describe(critic.bundles.options(i, critic_share)) for i in range(res.num_workers)]

    ref_opts = (shared.options(0, share) if shared else
                dict(num_cpus=spec.reference_cpus, num_gpus=res.gpus_per_worker))
    reference = ray.remote(ReferenceWorker).options(**ref_opts).remote(policy_dir)
    layout["reference"] = describe(ref_opts)
    backend = pick_backend(spec.rollout.backend)

    engine_bundles: dict = {}  # engine index → its tensor-parallel bundles

    def engine_factory(index: int, seed_offset: int = 1000):
        opts = _engine_options(spec, index, shared if co.all else None, share, engine_bundles)
        return _engine(backend, policy_dir, spec, spec.seed + index + seed_offset, opts, colocated=co.all, share=share)
    engines = [engine_factory(i, 0) for i in range(spec.rollout.num_engines)]
    layout["engines"] = [describe(_engine_options(spec, i, shared if co.all else None, share, engine_bundles))
                         for i in range(spec.rollout.num_engines)]

    fns = {name: rewards.load(name) for name in spec.reward_funcs}
    if reward_model_dir:
        from forge_ray.models.reward import reward_actor

        rm_bundles = shared if co.all else critic_bundles if co.critic_reward else None
        rm_opts = rm_bundles.options(0, critic_share if co.critic_reward else share) if rm_bundles else None
        rm_opts = rm_opts or dict(num_cpus=0.25, num_gpus=res.gpus_per_worker)
        fns["reward_model"] = rewards.reward_model_fn(reward_actor(reward_model_dir, options=rm_opts))
        layout["reward_model"] = describe(rm_opts)
    reward_fn = rewards.weighted_sum(fns, spec.reward_weights or [1.0] * len(fns))
    owned = [shared, critic_bundles if co.critic_reward else None]
    return Roles(policy=policy, reference=reference, engines=engines, critic=critic, reward_fn=reward_fn,
                 backend=backend, engine_factory=engine_factory, sync=spec.sync_method(), sleep_engines=co.all,
                 bundles=[b for b in owned if b is not None], engine_bundles=engine_bundles, layout=layout)


def _engine_options(spec: RLStage, index: int, shared, share: float, engine_bundles: dict) -> dict:
    """Ray options of engine ``index``: on the shared bundles, on its own tensor-parallel
    GPU bundles (created once, kept for a replacement), or plain CPU/GPU counts."""
    from forge_ray.rl.workers import Bundles

    r = spec.rollout
    if shared is not None:  # colocate.all: engine i on bundle i of the policy's group
        return shared.options(index % shared.size, share)
    if r.tensor_parallel > 1:  # vLLM's Ray executor fills this engine's own GPU bundles
        if index not in engine_bundles:
            engine_bundles[index] = Bundles(r.tensor_parallel, r.cpus_per_engine, 1)
        return {**engine_bundles[index].options(0, capture_children=True), "num_cpus": 0, "num_gpus": 0}
    return dict(num_cpus=r.cpus_per_engine, num_gpus=r.gpus_per_engine)


def _engine(backend: str, model_dir: str, spec: RLStage, seed: int, opts: dict, colocated: bool, share: float):
    import ray

    r = spec.rollout
    if backend == "vllm":
        from forge_ray.rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.options(**opts).remote(model_dir, seed=seed, tensor_parallel=r.tensor_parallel,
                                                 sleep_mode=colocated,
                                                 gpu_memory_utilization=0.9 * share if colocated else 0.9)
    from forge_ray.rl.rollout.hf_engine import HFEngine

    device = "cuda" if opts.get("num_gpus") else "cpu"
    return ray.remote(HFEngine).options(**opts).remote(model_dir, seed=seed, device=device)
