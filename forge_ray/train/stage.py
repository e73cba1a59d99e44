"""The training stages (driver side) — ``pretrain``, ``sft``, ``dpo``, ``reward_model``:
resolve inputs, prepare data, check that the model fits, run the Ray Train ``TorchTrainer``
(one step loop, the objective chosen by kind) and collect the result.

Data: a stage either names a prepared ``dataset`` run or lists raw ``data`` sources, which
are prepared first as their own ``data`` run (``<name>-data``: validated, cleaned,
tokenized, packed, with a report), so every training run's input is inspectable.

Recovery: ``FailureConfig(max_failures)`` restarts the worker group from the newest
checkpoint when a worker dies; re-running a run name after the driver died resumes from
the newest checkpoint found in the run directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path

from forge_ray import faults
from forge_ray.runner import (
    Context,
    InputError,
    StageResult,
    execute,
    input_dir,
    input_problems,
    resolve_source_runs,
    source_problems,
)
from forge_ray.runs import RunDir
from forge_ray.spec.stages import CleanSpec, DataStage, PretrainStage, _TrainingStage
from forge_ray.train.job import TokenIds, TrainJob, storage_root

log = logging.getLogger("forge_ray.train")


def run(spec: _TrainingStage, run: RunDir, ctx: Context) -> StageResult:
    from forge_ray.data.stream import dataset_files
    from forge_ray.models import registry
    from forge_ray.train.preflight import check_fits, require_placement

    ctx.ensure_ray()
    require_placement(spec.resources)
    tok_ref, tok_output, init_ref = _model_inputs(spec)
    pieces = None
    if getattr(spec, "new_tokens", None):  # continued pre-training with domain tokens
        tok_ref, pieces = _extended_tokenizer(spec, tok_ref, tok_output, run, ctx)
    data_run = spec.dataset or _prepare_data(spec, tok_ref, tok_output, ctx)
    run.update(parents=sorted(set(run.manifest().get("parents", [])) | {data_run}))
    with input_dir(ctx, data_run, "dataset") as train_dir, input_dir(ctx, tok_ref, tok_output) as tok_dir:
        train_files = dataset_files(str(train_dir))
        val_files = _val_files(ctx, data_run)
        token_ids = TokenIds.read(tok_dir)  # (without importing transformers: seconds of every start)
        init_dir = None
        if init_ref:
            from transformers import AutoConfig

            with input_dir(ctx, init_ref, "model") as d:
                init_dir = str(d)
            config = AutoConfig.from_pretrained(init_dir, trust_remote_code=False)
            arch = registry.arch_from_hf(config)
        else:
            arch = registry.resolve(spec.model)
        pairs = spec.kind in ("dpo", "reward_model")  # a row is two sequences: chosen and rejected
        gpu = spec.resources.gpus_per_worker > 0  # bf16 activations and a fused attention kernel there
        est = registry.estimate(arch, token_ids.vocab_size, spec.train.seq_len, spec.train.micro_batch_size * (1 + pairs),
                                spec.resources.num_workers, spec.train.activation_checkpointing,
                                bytes_per_act=2 if gpu and spec.train.precision != "fp32" else 4,
                                frozen_copies=int(spec.kind == "dpo"), fused_attention=gpu)
        check_fits(est, spec)
        job = TrainJob(spec=spec, storage=storage_root(ctx), train_files=train_files, val_files=val_files,
                       tokenizer_dir=str(tok_dir), token_ids=token_ids, arch=arch,
                       flops_per_token=est.flops_per_token, init_model_dir=init_dir,
                       train_dir=_train_dir_for_resume(run), vocab_pieces=pieces, fault=faults.planned())
        run.update(estimate=est.to_json())  # precision: each worker records what its device chose
        with _progress(run, spec.train.max_steps, ctx):
            _fit(job, spec, run)
    return StageResult(metrics=_summary(run.metrics(), est), outputs={"model": "model"})


def _summary(history: list[dict], est) -> dict:
    """Manifest metrics: the last step's figures, the first loss, every validation figure's
    latest value and its value before training (``start_val_*``, logged at step 0)."""
    steps = [m for m in history if "loss" in m]
    metrics = {k: v for k, v in (steps[-1] if steps else {}).items() if isinstance(v, (int, float))}
    metrics.update(first_loss=steps[0]["loss"] if steps else None, params=est.params, active_params=est.active_params)
    for row in history:
        for key, value in row.items():
            if key.startswith("val_") and isinstance(value, (int, float)):
                metrics[key] = value
                if row["step"] == 0:
                    metrics[f"start_{key}"] = value
    metrics.pop("time", None)
    return metrics


def _model_inputs(spec: _TrainingStage) -> tuple[str, str, str | None]:
    """(tokenizer ref, its output name, initial model ref) for the stage kind."""
    if isinstance(spec, PretrainStage):
        return spec.tokenizer, "tokenizer", spec.init_from
    base = getattr(spec, "base", None)
    if not base:
        raise InputError(f"{spec.kind} needs `base`")
    return base, "model", base  # the base model directory carries its tokenizer


def _extended_tokenizer(spec: PretrainStage, tok_ref: str, tok_output: str, run: RunDir,
                        ctx: Context) -> tuple[str, dict[int, list[int]]]:
    """The tokenizer with ``new_tokens`` added, saved in the run (its data, export and every
    later stage use it); returns its directory and each new id's old pieces."""
    from transformers import AutoTokenizer

    from forge_ray.models.vocab import extend_tokenizer

    with input_dir(ctx, tok_ref, tok_output) as src:
        tok = AutoTokenizer.from_pretrained(str(src))
    pieces = extend_tokenizer(tok, spec.new_tokens)
    with run.local_dir("tokenizer") as out:
        tok.save_pretrained(str(out))
    run.update(new_tokens={tok.convert_ids_to_tokens(i): len(p) for i, p in pieces.items()})
    log.info("vocabulary %d → %d: %s", len(tok) - len(pieces), len(tok), ", ".join(spec.new_tokens))
    return run.file("tokenizer"), pieces


def _prepare_data(spec: _TrainingStage, tok_ref: str, tok_output: str, ctx: Context) -> str:
    """Prepare the raw sources as a ``data`` run named ``<name>-data`` (resumed if done), or
    read a data run already prepared from the same sources, tokenizer and settings."""
    from forge_ray.data.reuse import find_prepared, preparation_key, source_files

    layout = {"sft": "sft", "dpo": "preference", "reward_model": "preference"}.get(spec.kind, "pretrain")
    with input_dir(ctx, tok_ref, tok_output) as tok_dir:
        data_spec = DataStage(kind="data", name=f"{spec.name}-data", seed=spec.seed, sources=spec.data,
                              tokenizer=str(tok_dir), layout=layout, seq_len=spec.train.seq_len,
                              val_fraction=spec.train.val_fraction, packing=getattr(spec, "packing", True),
                              clean=CleanSpec(near_dedup=False))
        fresh = not ctx.storage.exists(data_spec.name)
        if fresh and not input_problems(data_spec, ctx.storage) and not source_problems(data_spec):
            resolved = resolve_source_runs(data_spec, ctx.storage)
            twin = find_prepared(ctx.storage, preparation_key(resolved, source_files(resolved), str(tok_dir)))
            if twin:
                log.info("↺ %s reads %s: prepared from the same sources, tokenizer and settings", spec.name, twin,
                         extra={"console": True})
                return twin
        execute(data_spec, ctx)
    return data_spec.name


def _val_files(ctx: Context, data_run: str) -> list[str]:
    from forge_ray.data.stream import dataset_files

    outputs = ctx.storage.run(data_run).manifest().get("outputs", {})
    if "val" not in outputs:
        return []
    with input_dir(ctx, data_run, "val") as d:
        return dataset_files(str(d))


def _train_dir_for_resume(run: RunDir) -> str | None:
    """Where the workers look for this run's newest whole checkpoint whenever they start (a
    re-run after a driver crash, or a worker group Ray Train restarts): on storage every
    node mounts. Object stores rely on Ray Train's own record of checkpoints instead."""
    from forge_ray.train.checkpoint import latest

    if not run.storage.is_local:
        return None
    train_dir = Path(run.path) / "train"
    _set_aside_torn_ray_snapshot(train_dir)
    found = latest(train_dir)
    if found is not None:
        log.info("resuming %s from %s", run.name, found)
    return str(train_dir)


def _set_aside_torn_ray_snapshot(train_dir: Path) -> None:
    """Ray Train rewrites its checkpoint list in place; a full disk can leave it empty, and Ray
    then refuses to start the run at all. Our own sealed checkpoints are the record that
    matters (``latest`` picks the newest whole one), so a torn list is moved aside."""
    snapshot = train_dir / "checkpoint_manager_snapshot.json"
    try:
        json.loads(snapshot.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        aside = snapshot.with_name(f"{snapshot.name}.torn")
        snapshot.replace(aside)
        log.warning("Ray Train's checkpoint list %s was cut short (%s); moved to %s", snapshot, exc, aside.name)


@contextlib.contextmanager
def _progress(run: RunDir, max_steps: int, ctx: Context):
    """A progress bar on the driver fed by the run's metrics.jsonl (what rank 0 writes)."""
    stop = threading.Event()
    bar = ctx.progress(f"{run.name}", total=max_steps, unit="step")

    def follow():
        while not stop.wait(2.0):
            try:
                rows = run.metrics()
            except (OSError, ValueError):
                continue
            if rows and rows[-1]["step"] > 0:
                last = rows[-1]
                bar.n = min(int(last["step"]), max_steps)
                bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "val_bpb", "tokens_per_s") if k in last})
            else:  # before the first step: what the workers are doing (their phases in run.log)
                with contextlib.suppress(OSError, ValueError):
                    bar.set_postfix_str(run.manifest().get("phase", ""))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        bar.close()


#: how often Ray Train's controller polls its workers (Ray's default 2 s): the end of a run is
#: seen within this, so a short run (a sweep's trial, a test, a small experiment) waits less;
#: a poll asks each worker actor for its status, cheap beside any training step
HEALTH_CHECK_INTERVAL_S = "0.5"


def _fit(job: TrainJob, spec: _TrainingStage, run: RunDir) -> None:
    import os

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from forge_ray.train.loop import train_loop_per_worker

    res = spec.resources
    log.info("starting %d training workers", res.num_workers)
    run.update(phase="starting workers")
    # a user's own setting wins; Ray Train passes the driver's value on to its controller
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    if res.memory_per_worker_gb:
        per_worker["memory"] = res.memory_per_worker_gb * 1024**3
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=res.num_workers, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name="train", storage_path=run.path,
                             failure_config=FailureConfig(max_failures=spec.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=spec.train.keep_checkpoints),
                             callbacks=_tune_callbacks()),
    )
    trainer.fit()


def _tune_callbacks() -> list:
    """Inside a sweep's trial, the workers' reports (validation loss at each eval) go to Tune."""
    try:
        from ray.tune.integration.ray_train import TuneReportCallback

        return [TuneReportCallback()]
    except (ImportError, RuntimeError):  # RuntimeError: not in a Tune session
        return []
