"""The ``sweep`` stage: any training spec (``base``) plus a search space over its dotted keys,
run under ``ray.tune.Tuner``. Each trial is a normal run (``<sweep>-<trial id>``: run dir,
manifest, metrics, the sweep among its parents) whose Ray Train workers report to Tune
through ``TuneReportCallback`` — so ASHA sees every validation loss and stops poor trials
early. The sweep's own run dir holds ``results.csv``/``results.json`` (one row per trial),
``best.yaml`` (the best trial's spec, ready to run) and ``sweep.png`` (metric against each
searched key). Re-running an interrupted sweep restores the Tune experiment.

    forge run jobs/configs/tiny/sweep.yaml        # or: forge sweep SPEC, api.run(spec)
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from pathlib import Path

from forge_ray.runner import Context, StageResult
from forge_ray.runs import RunDir
from forge_ray.spec.stages import SweepStage
from forge_ray.spec.stages import _set as set_dotted

log = logging.getLogger("forge_ray.tune")


def search_space(spec: SweepStage) -> dict:
    from ray import tune

    make = {"choice": lambda p: tune.choice(p.values), "grid": lambda p: tune.grid_search(p.values),
            "uniform": lambda p: tune.uniform(p.low, p.high), "loguniform": lambda p: tune.loguniform(p.low, p.high),
            "randint": lambda p: tune.randint(int(p.low), int(p.high))}
    return {key: make[p.type](p) for key, p in spec.space.items()}


def trial_spec(spec: SweepStage, config: dict, trial_id: str) -> dict:
    out = copy.deepcopy(spec.base)
    for key, value in config.items():
        set_dotted(out, key, _plain(value))
    out["name"] = f"{spec.name}-{trial_id}"
    return out


def _trial(config: dict, sweep: dict, storage: str) -> None:
    """One trial, inside Tune: run the training spec as its own run (Train workers report to Tune)."""
    from ray import tune

    from forge_ray.runner import execute
    from forge_ray.runs import Storage
    from forge_ray.spec import build_spec

    spec = build_spec(sweep)
    trial = trial_spec(spec, config, tune.get_context().get_trial_id())
    store = Storage(storage)
    try:
        execute(build_spec(trial), Context(store, show_progress=False))
    except BaseException as exc:
        from forge_ray.diagnose import diagnose

        if diagnose(exc)[0].kind == "worker_lost":  # the scheduler stopped this trial: its bundles went away
            store.run(trial["name"]).update(status="stopped", stopped_by=spec.scheduler, error=None)
        raise


def _scheduler(spec: SweepStage):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "asha":
        # one past the last step: a trial that reaches the end finishes on its own (exports, records
        # success) instead of being stopped by the scheduler at its final report
        max_t = int(spec.base.get("train", {}).get("max_steps", 100)) + 1
        return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=max(1, spec.grace_period),
                             reduction_factor=spec.reduction_factor)
    return FIFOScheduler()


def _search(spec: SweepStage):
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch  # needs `pip install optuna`

        return OptunaSearch()
    return None  # random sampling of the space (grid keys expand to every value)


def run(spec: SweepStage, run: RunDir, ctx: Context) -> StageResult:
    from ray import tune

    from forge_ray.spec import spec_to_dict

    if not run.storage.is_local:
        raise ValueError("sweeps keep their Tune experiment on local or mounted storage")
    ctx.ensure_ray()
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep=spec_to_dict(spec), storage=run.storage.uri),
        {"CPU": 0.01})  # the trial only drives its Ray Train run; the workers reserve the real CPUs
    path = Path(run.path) / "tune"
    if tune.Tuner.can_restore(str(path / "sweep")):
        log.info("restoring the interrupted sweep from %s", path)
        tuner = tune.Tuner.restore(str(path / "sweep"), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=search_space(spec),
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                        max_concurrent_trials=spec.max_concurrent, scheduler=_scheduler(spec),
                                        search_alg=_search(spec)),
            run_config=tune.RunConfig(name="sweep", storage_path=str(path), verbose=0))
    grid = tuner.fit()
    rows = _rows(spec, grid)
    if not any(r["completed"] or r[spec.metric] is not None for r in rows):
        raise RuntimeError(f"no trial of {spec.name} reported {spec.metric!r}; see the trials' run.log")
    best = _best(spec, rows)
    for r in rows:  # every trial in the sweep's lineage; one the scheduler stopped is not still running
        if not (r["run"] and run.storage.exists(r["run"])):
            continue
        trial = run.storage.run(r["run"])
        trial.update(sweep=spec.name, parents=sorted(set(trial.manifest().get("parents", [])) | {spec.name}))
        if r["stopped_early"]:
            trial.update(status="stopped", stopped_by=spec.scheduler, stopped_at_step=r["steps"], error=None)
        elif r["error"] and trial.manifest().get("status") == "stopped":  # a real failure, not the scheduler
            trial.update(status="failed")
    _write(run, spec, rows, best)
    return StageResult(metrics={"trials": len(rows), "stopped_early": sum(r["stopped_early"] for r in rows),
                                "best_trial": best["run"], f"best_{spec.metric}": best[spec.metric],
                                **{f"best.{k}": best["config"][k] for k in spec.space}},
                       outputs={"results": "results.json", "best_spec": "best.yaml"})


def _rows(spec: SweepStage, grid) -> list[dict]:
    max_steps = int(spec.base.get("train", {}).get("max_steps", 0))
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        values = [] if history is None or spec.metric not in history else \
            [v for v in history[spec.metric].tolist() if v == v]
        metrics = result.metrics or {}
        steps = int(metrics.get("step", 0))
        run_name = f"{spec.name}-{metrics['trial_id']}" if "trial_id" in metrics else ""
        final = values[-1] if values else None
        rows.append({"run": run_name, "config": {k: _plain(result.config.get(k)) for k in spec.space},
                     spec.metric: final, "steps": steps, "completed": result.error is None and steps >= max_steps,
                     "stopped_early": result.error is None and 0 < steps < max_steps,
                     "error": str(result.error)[:300] if result.error else None})
    return rows


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _best(spec: SweepStage, rows: list[dict]) -> dict:
    """The best *completed* trial: a trial ASHA stopped early never saw the full budget."""
    pool = [r for r in rows if r["completed"] and r[spec.metric] is not None] or \
        [r for r in rows if r[spec.metric] is not None]
    sign = 1 if spec.mode == "min" else -1
    return min(pool, key=lambda r: sign * r[spec.metric])


def _write(run: RunDir, spec: SweepStage, rows: list[dict], best: dict) -> None:
    import yaml

    out = Path(run.path)
    (out / "results.json").write_text(json.dumps({"metric": spec.metric, "mode": spec.mode, "best": best,
                                                  "trials": rows}, indent=2) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *spec.space, spec.metric, "steps", "completed", "stopped_early", "error"])
        for r in rows:
            writer.writerow([r["run"], *(r["config"][k] for k in spec.space), r[spec.metric], r["steps"],
                             r["completed"], r["stopped_early"], r["error"] or ""])
    best_spec = trial_spec(spec, best["config"], "best")
    (out / "best.yaml").write_text(f"# best trial of sweep {spec.name}: {best['run']} "
                                   f"({spec.metric} = {best[spec.metric]})\n" + yaml.safe_dump(best_spec, sort_keys=False))
    _plot(out / "sweep.png", spec, rows)


def _plot(path: Path, spec: SweepStage, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for done, marker, label in ((True, "o", "completed"), (False, "x", "stopped early / failed")):
            pts = [(r["config"][key], r[spec.metric]) for r in rows if r["completed"] == done and r[spec.metric] is not None]
            if pts and all(isinstance(x, (int, float)) for x, _ in pts):
                ax.scatter(*zip(*pts), marker=marker, label=label)
        if spec.space[key].type == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(spec.metric)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
