"""The ``rl`` stage (driver side): read and split the prompts, place the roles as Ray
actors, run :class:`~forge_ray.rl.controller.RLController` with metrics, held-out reward,
checkpoints and resume, then export the policy.

Placement (:mod:`forge_ray.rl.placement`): the policy group takes ``resources``, each
rollout engine ``rollout.cpus_per_engine`` (fractions allowed), the reference
``reference_cpus`` — the whole loop fits on 2 CPUs — or roles share bundles (``colocate``). Checkpoints (``checkpoints/step-N``) hold the policy's (and
critic's) DeepSpeed state, the controller's data position and an integrity record;
re-running the same run name resumes from the newest one. ``samples.jsonl`` keeps a few
rollouts per step (prompt, completion, reward) to read what the policy is learning to say.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from pathlib import Path

from forge_ray import faults
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


def run(spec: RLStage, run: RunDir, ctx: Context) -> StageResult:
    from transformers import AutoTokenizer

    from forge_ray.rl.controller import RLController
    from forge_ray.rl.placement import build_roles

    train_rows, eval_rows = split_prompts(spec)  # bad prompt files fail before any actor starts
    if spec.engine == "openrlhf":
        return _run_openrlhf(spec, run, ctx, train_rows)
    ctx.ensure_ray()
    from forge_ray.rl.placement import room_problems
    from forge_ray.spec.typed import SpecError
    from forge_ray.train.preflight import cluster_nodes, require_placement

    require_placement(spec.resources)
    if problems := room_problems(spec, cluster_nodes() or []):
        raise SpecError(problems)
    with contextlib.ExitStack() as inputs:
        policy_dir = inputs.enter_context(input_dir(ctx, spec.policy, "model"))
        rm_dir = str(inputs.enter_context(input_dir(ctx, spec.reward_model, "model"))) if spec.reward_model else None
        roles = build_roles(spec, str(policy_dir), rm_dir)
        run.update(rollout_backend=roles.backend, weight_sync=roles.sync, placement=roles.layout)
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
                    if stale := controller.stale_weights(metrics):
                        raise stale
                    for sample in controller.samples:
                        run.append_line("samples.jsonl", json.dumps(sample, ensure_ascii=False))
                    bar.update(1)
                    bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("reward_mean", "eval_reward", "eval_reward_sampled")
                                     if k in metrics})
                    if last or (spec.checkpoint_every and step % spec.checkpoint_every == 0):
                        _checkpoint(controller, run)
                    _maybe_fail(step)
            with run.local_dir("model") as out:
                roles.policy.run_all("save_hf", str(out), str(policy_dir))
        finally:
            _shutdown(roles)
    history = run.metrics()
    evals = [m["eval_reward"] for m in history if "eval_reward" in m]
    sampled = [m["eval_reward_sampled"] for m in history if "eval_reward_sampled" in m]
    rewards_seen = [m["reward_mean"] for m in history if "reward_mean" in m]
    metrics = {"rollout_backend": roles.backend, "steps": spec.max_steps,
               "start_eval_reward": evals[0] if evals else None, "eval_reward": evals[-1] if evals else None,
               "start_eval_reward_sampled": sampled[0] if sampled else None,
               "eval_reward_sampled": sampled[-1] if sampled else None,
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
    roles.policy.run_all("save_checkpoint", str(tmp / "policy"))
    if roles.critic:
        roles.critic.run_all("save_checkpoint", str(tmp / "critic"))
    digest = roles.policy.run_all("weights_digest")[0]
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
    roles.policy.run_all("load_checkpoint", str(latest / "policy"))
    if roles.critic:
        roles.critic.run_all("load_checkpoint", str(latest / "critic"))
    saved = json.loads((latest / "controller.json").read_text())
    restored = roles.policy.run_all("weights_digest")[0]
    if restored != saved["policy_sha256"]:
        raise RuntimeError(f"{latest}: the restored policy's weights differ from the saved ones "
                           f"({restored[:12]} vs {saved['policy_sha256'][:12]})")
    controller.load_state_dict(saved)
    controller.sync_weights()
    run.update(resumed_from_step=controller.state.step, resumed_policy_sha256=restored)
    log.info("resumed %s at step %d (policy weights verified)", run.name, controller.state.step)


def _maybe_fail(step: int) -> None:
    """Fault injection for the resume test (:mod:`forge_ray.faults`): the driver fails once."""
    fault = faults.planned()
    if fault is not None and fault.due("rl_step", step):
        raise RuntimeError(f"injected fault after RL step {step}")


def _shutdown(roles) -> None:
    import ray

    for group in (roles.policy, roles.critic):
        if group is not None:
            group.kill()
    for actor in [roles.reference, *roles.engines]:
        ray.kill(actor)
    for bundles in [*roles.bundles, *roles.engine_bundles.values()]:
        bundles.remove()


def _run_openrlhf(spec: RLStage, run: RunDir, ctx: Context, train_rows: list[dict]) -> StageResult:
    """Submit OpenRLHF's ``train_ppo_ray`` for this spec as a Ray job and wait for it."""
    import time

    from forge_ray import jobs_client
    from forge_ray.rl.openrlhf import command, reward_script, train_args

    if not run.storage.is_local:
        raise ValueError("engine: openrlhf reads and writes the run directory: use local or mounted shared storage")
    root = Path(run.path)
    prompts = root / "openrlhf_prompts.jsonl"
    prompts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train_rows))
    script = None
    if spec.reward_funcs:
        script = root / "openrlhf_reward.py"
        script.write_text(reward_script(spec))
    with contextlib.ExitStack() as inputs:
        policy_dir = inputs.enter_context(input_dir(ctx, spec.policy, "model"))
        rm_dir = str(inputs.enter_context(input_dir(ctx, spec.reward_model, "model"))) if spec.reward_model else None
        cmd = command(train_args(spec, str(policy_dir), str(prompts), str(root / "openrlhf"), len(train_rows),
                                 rm_dir, str(script) if script else None))
    client = jobs_client.connect(ctx.address).client
    repo = Path(__file__).resolve().parents[2]
    job_id = client.submit_job(entrypoint=cmd, runtime_env={"working_dir": str(repo), "excludes": [
        ".venv", "forge_runs", ".git", "**/__pycache__"]}, metadata={"forge_run": spec.name, "engine": "openrlhf"})
    run.update(rollout_backend="openrlhf", openrlhf_job=job_id, openrlhf_command=cmd)
    while (status := str(client.get_job_status(job_id))) not in ("JobStatus.SUCCEEDED", "JobStatus.FAILED",
                                                                   "JobStatus.STOPPED", "SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(10)
    if not status.endswith("SUCCEEDED"):
        raise RuntimeError(f"OpenRLHF job {job_id} ended {status}; see `ray job logs {job_id}`")
    return StageResult(metrics={"engine": "openrlhf", "job_id": job_id}, outputs={"model": "openrlhf"})