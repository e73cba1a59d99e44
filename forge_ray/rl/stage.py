"""The ``rl`` stage (driver side): read and split the prompts, place the roles as Ray
actors, run :class:`~forge_ray.rl.controller.RLController` with metrics, held-out reward,
checkpoints and resume, then export the policy.

Placement on a small machine: the policy group takes ``resources``, each rollout engine
``rollout.cpus_per_engine`` (fractions allowed), the reference ``reference_cpus`` — the
whole loop fits on 2 CPUs. Checkpoints (``checkpoints/step-N``) hold the policy's (and
critic's) DeepSpeed state, the controller's data position and an integrity record;
re-running the same run name resumes from the newest one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

from forge_ray.runner import Context, StageResult, input_dir
from forge_ray.runs import RunDir
from forge_ray.spec.stages import RLStage

log = logging.getLogger("forge_ray.rl")


def split_prompts(spec: RLStage) -> tuple[list[dict], list[dict]]:
    """Prompt rows (``prompt``, ``answer``, extra fields), shuffled with the seed and split."""
    from forge_ray.data.sources import iter_texts

    rows = [json.loads(r["payload"]) for r in iter_texts(spec.prompts)]
    random.Random(spec.seed).shuffle(rows)
    n_eval = int(len(rows) * spec.eval_fraction)
    if len(rows) - n_eval < 1:
        raise ValueError(f"{spec.name}: {len(rows)} prompts leave none to train on after eval_fraction")
    return rows[n_eval:], rows[:n_eval]


def pick_backend(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "vllm"


def build_roles(spec: RLStage, policy_dir: str, reward_model_dir: str | None):
    import ray

    from forge_ray.distributed.deepspeed_config import choose_precision
    from forge_ray.rl import rewards
    from forge_ray.rl.algos import ALGORITHMS
    from forge_ray.rl.controller import Roles
    from forge_ray.rl.workers import ActorGroup, ReferenceWorker, TrainableWorker
    from forge_ray.spec import spec_to_dict
    from forge_ray.spec.sections import TrainSpec

    algo, res, r = ALGORITHMS[spec.algo], spec.resources, spec.rollout
    optim = spec_to_dict(spec)["optim"]
    train = {"zero_stage": 0, "micro_batch_size": spec.micro_batch_size, "threads": int(max(1, res.cpus_per_worker))}
    precision = choose_precision(TrainSpec())
    policy_kwargs = dict(clip_eps=spec.clip_eps, clip_eps_high=spec.clip_eps_high,
                         kl_loss_coef=0.0 if algo.kl_in_reward else spec.kl_coef, kl_estimator=spec.kl_estimator,
                         entropy_coef=spec.entropy_coef, aggregation=spec.loss_aggregation)
    init = dict(role="policy", model_dir=policy_dir, optim=optim, train=train, objective=policy_kwargs,
                seed=spec.seed, precision=precision)
    policy = ActorGroup(TrainableWorker, res.num_workers, res.cpus_per_worker, res.gpus_per_worker, init)
    critic = None
    if algo.critic:
        critic = ActorGroup(TrainableWorker, res.num_workers, res.cpus_per_worker, res.gpus_per_worker,
                            {**init, "role": "critic", "objective": {"aggregation": spec.loss_aggregation}})
    reference = ray.remote(ReferenceWorker).options(num_cpus=spec.reference_cpus).remote(policy_dir)
    backend = pick_backend(r.backend)
    engines = [_engine(backend, policy_dir, r, spec.seed + i) for i in range(r.num_engines)]

    def engine_factory(index: int):
        return _engine(backend, policy_dir, r, spec.seed + index + 1000)
    fns = {name: rewards.load(name) for name in spec.reward_funcs}
    if reward_model_dir:
        from forge_ray.models.reward import reward_actor

        fns["reward_model"] = rewards.reward_model_fn(reward_actor(reward_model_dir, num_cpus=0.25))
    reward_fn = rewards.weighted_sum(fns, spec.reward_weights or [1.0] * len(fns))
    return Roles(policy=policy, reference=reference, engines=engines, critic=critic, reward_fn=reward_fn,
                 backend=backend, engine_factory=engine_factory)


def _engine(backend: str, model_dir: str, r, seed: int):
    import ray

    opts = dict(num_cpus=r.cpus_per_engine, num_gpus=r.gpus_per_engine)
    if backend == "vllm":
        from forge_ray.rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.options(**opts).remote(model_dir, seed=seed)
    from forge_ray.rl.rollout.hf_engine import HFEngine

    return ray.remote(HFEngine).options(**opts).remote(model_dir, seed=seed)


def run(spec: RLStage, run: RunDir, ctx: Context) -> StageResult:
    from transformers import AutoTokenizer

    from forge_ray.rl.controller import RLController

    train_rows, eval_rows = split_prompts(spec)  # bad prompt files fail before any actor starts
    ctx.ensure_ray()
    with contextlib.ExitStack() as inputs:
        policy_dir = inputs.enter_context(input_dir(ctx, spec.policy, "model"))
        rm_dir = str(inputs.enter_context(input_dir(ctx, spec.reward_model, "model"))) if spec.reward_model else None
        roles = build_roles(spec, str(policy_dir), rm_dir)
        run.update(rollout_backend=roles.backend)
        try:
            controller = RLController(spec, roles, AutoTokenizer.from_pretrained(policy_dir), train_rows, eval_rows)
            _resume(controller, run)
            first = controller.evaluate() if controller.state.step == 0 else {}
            if first:
                run.log_metrics(0, **first)
            with ctx.progress(spec.name, total=spec.max_steps, unit="step") as bar:
                bar.update(controller.state.step)
                while controller.state.step < spec.max_steps:
                    metrics = controller.step()
                    step = controller.state.step
                    last = step == spec.max_steps
                    if last or (spec.eval_every and step % spec.eval_every == 0):
                        metrics.update(controller.evaluate())
                    run.log_metrics(step, **metrics)
                    bar.update(1)
                    bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("reward_mean", "eval_reward") if k in metrics})
                    if last or (spec.checkpoint_every and step % spec.checkpoint_every == 0):
                        _checkpoint(controller, run)
                    _maybe_fail(step)
            with run.local_dir("model") as out:
                roles.policy.call("save_hf", [str(out)] * len(roles.policy.actors),
                                  [str(policy_dir)] * len(roles.policy.actors))
        finally:
            _shutdown(roles)
    history = run.metrics()
    evals = [m["eval_reward"] for m in history if "eval_reward" in m]
    rewards_seen = [m["reward_mean"] for m in history if "reward_mean" in m]
    metrics = {"rollout_backend": roles.backend, "steps": spec.max_steps,
               "start_eval_reward": evals[0] if evals else None, "eval_reward": evals[-1] if evals else None,
               "first_reward_mean": rewards_seen[0] if rewards_seen else None,
               "reward_mean": rewards_seen[-1] if rewards_seen else None}
    return StageResult(metrics=metrics, outputs={"model": "model"})


def _checkpoint(controller, run: RunDir) -> None:
    """Policy (and critic) engine state + controller state, sealed with an integrity record."""
    from forge_ray.train.checkpoint import seal

    if not run.storage.is_local:
        log.warning("RL checkpoints need local or mounted storage; skipped")
        return
    step = controller.state.step
    directory = Path(run.path) / "checkpoints" / f"step-{step}"
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    roles = controller.roles
    roles.policy.call("save_checkpoint", [str(tmp / "policy")] * len(roles.policy.actors))
    if roles.critic:
        roles.critic.call("save_checkpoint", [str(tmp / "critic")] * len(roles.critic.actors))
    digest = roles.policy.call("weights_digest")[0]
    (tmp / "controller.json").write_text(json.dumps({**controller.state_dict(), "policy_sha256": digest}))
    seal(tmp, step)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def _resume(controller, run: RunDir) -> None:
    from forge_ray.train.checkpoint import verify

    root = Path(run.path) / "checkpoints"
    found = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if root.exists() else []
    if not found:
        return
    latest = found[-1]
    verify(latest)
    roles = controller.roles
    roles.policy.call("load_checkpoint", [str(latest / "policy")] * len(roles.policy.actors))
    if roles.critic:
        roles.critic.call("load_checkpoint", [str(latest / "critic")] * len(roles.critic.actors))
    saved = json.loads((latest / "controller.json").read_text())
    restored = roles.policy.call("weights_digest")[0]
    if restored != saved["policy_sha256"]:
        raise RuntimeError(f"{latest}: the restored policy's weights differ from the saved ones "
                           f"({restored[:12]} vs {saved['policy_sha256'][:12]})")
    controller.load_state_dict(saved)
    controller.sync_weights()
    run.update(resumed_from_step=controller.state.step, resumed_policy_sha256=restored)
    log.info("resumed %s at step %d (policy weights verified)", run.name, controller.state.step)


def _maybe_fail(step: int) -> None:
    """Fault injection for the resume test: the driver dies once after a given RL step."""
    fault = json.loads(os.environ.get("FORGE_FAULT_INJECT") or "null")
    if fault and fault.get("rl_step") == step and not os.path.exists(fault["marker"]):
        Path(fault["marker"]).write_text(f"stopped after RL step {step}\n")
        raise RuntimeError(f"injected fault after RL step {step}")


def _shutdown(roles) -> None:
    import ray

    for group in (roles.policy, roles.critic):
        if group is not None:
            group.kill()
    for actor in [roles.reference, *roles.engines]:
        ray.kill(actor)
