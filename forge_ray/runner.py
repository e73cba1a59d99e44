"""Execute one stage spec as a run: preflight inputs, open the run dir, call the stage, record
the outcome. Every kind goes through :func:`execute`, so lineage, resume/refuse, error
records and logs behave the same for all of them.

A stage implementation is ``run(spec, run: RunDir, ctx: Context) -> StageResult``; it is
imported lazily so that importing forge_ray stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_ray.runs import RunDir, Storage
from forge_ray.spec import SpecError, StageSpec, spec_to_yaml
from forge_ray.spec.typed import Problem

log = logging.getLogger("forge_ray")

#: kind → "module:function"; kinds missing here are not runnable in this version yet
RUNNERS: dict[str, str] = {
    "tokenizer": "forge_ray.tokenizer.stage:run",
    "data": "forge_ray.data.stage:run",
    "augment": "forge_ray.knowledge.stage:run",
    "pretrain": "forge_ray.train.stage:run",
    "sft": "forge_ray.train.stage:run",
    "dpo": "forge_ray.train.stage:run",
    "reward_model": "forge_ray.train.stage:run",
    "rl": "forge_ray.rl.stage:run",
    "eval": "forge_ray.eval.stage:run",
    "vlm": "forge_ray.vlm.stage:run",
    "sweep": "forge_ray.tune.stage:run",
    "pipeline": "forge_ray.pipeline:run",
}


@dataclass
class StageResult:
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # name → path relative to the run dir


class InputError(ValueError):
    """An input run is missing or not finished; exit code 2, nothing started."""


@dataclass
class Context:
    """What a stage needs besides its spec: storage, the Ray address, progress output."""

    storage: Storage
    address: str | None = None
    show_progress: bool = True
    job_id: str | None = None

    def ensure_ray(self) -> None:
        """Connect to ``address`` (or ``RAY_ADDRESS``), or start a local Ray, once per process."""
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address and address != "local":  # "local" starts a Ray of our own, as no address does
            use_token_auth_if_available()  # before `import ray`: Ray reads the auth mode at import
        import ray

        from forge_ray import console

        if ray.is_initialized():
            return
        console.quiet_ray_driver()  # vendor output into run.log when a person reads the terminal
        kwargs = {"log_to_driver": True, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(**kwargs)  # with the dashboard when installed: Ray Train V2 uses the state API
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False  # ours (tqdm) is enough
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        console.quiet_ray_workers()

    def progress(self, desc: str, total: int | None = None, unit: str = "it"):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, disable=not self.show_progress, leave=False)


def ray_auth_token() -> str | None:
    """Ray's token for token authentication, from where Ray itself looks (``$RAY_AUTH_TOKEN``,
    then ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); an empty file is no token."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if not token and os.path.exists(path):
        token = Path(path).read_text().strip()
    return token or None


def use_token_auth_if_available() -> None:
    """Ray 2.60 sends its auth token to an explicitly addressed cluster only when
    ``RAY_AUTH_MODE=token``; turn that on when a token exists and the user chose no mode."""
    if "RAY_AUTH_MODE" not in os.environ and ray_auth_token():
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def input_dir(ctx: Context, ref: str, output: str) -> Iterator[Path]:
    """A local directory for an input: a run's named output (fetched when storage is remote),
    or ``ref`` itself when it is a local directory (e.g. an HF tokenizer/model folder)."""
    if os.path.isdir(ref) and not ctx.storage.exists(ref):
        from forge_ray.allowed_paths import require_allowed

        require_allowed(ref, f"{output} directory")
        yield Path(ref)
        return
    run = ctx.storage.run(ref)
    outputs = run.manifest().get("outputs", {})
    if output not in outputs:
        raise InputError(f"run {ref!r} has no {output!r} output (it has: {', '.join(outputs) or 'none'})")
    with run.fetch_dir(outputs[output]) as path:
        yield path


#: language models a stage can start from or fine-tune
_LANGUAGE_MODELS = ("pretrain", "sft", "dpo", "rl", "import")
#: (stage kind or "*", input field) → the run kinds it accepts
INPUT_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("*", "tokenizer"): ("tokenizer",),  # or any run with a tokenizer output (pre-training with new_tokens)
    ("*", "dataset"): ("data",),
    ("*", "base"): _LANGUAGE_MODELS,
    ("*", "policy"): _LANGUAGE_MODELS,
    ("*", "language_model"): _LANGUAGE_MODELS,
    ("pretrain", "init_from"): _LANGUAGE_MODELS,
    ("vlm", "init_from"): ("vlm",),
    ("*", "reward_model"): ("reward_model",),
    ("*", "run"): ("augment", "data"),  # a source reading an earlier run's corpus
    ("augment", "teacher.model"): _LANGUAGE_MODELS,
}
#: the output a ``run:`` source reads, by the kind of that run
CORPUS_OUTPUTS = {"augment": "corpus", "data": "docs"}


def _kind_problem(spec: StageSpec, field_name: str, run_name: str, kind: str | None,
                  outputs: dict | None = None) -> Problem | None:
    key = "run" if field_name.endswith(".run") else field_name
    accepted = INPUT_KINDS.get((spec.kind, key)) or INPUT_KINDS.get(("*", key))
    if not accepted or kind is None or kind in accepted or (field_name == "tokenizer" and "tokenizer" in (outputs or {})):
        return None
    return Problem(field_name, f"names run {run_name!r}, a {kind!r} run; {spec.kind} needs a run of kind "
                               f"{' or '.join(repr(k) for k in accepted)} here",
                   f"name a {accepted[0]} run (forge runs lists them with their kinds)")


def input_problems(spec: StageSpec, storage: Storage, produced_earlier=frozenset()) -> list[Problem]:
    """Inputs that name runs which don't exist (or did not succeed), or runs of a kind the field
    cannot use, and are not made earlier. ``produced_earlier``: names, or name → kind of the
    earlier stages of a pipeline (then their kinds are checked too)."""
    problems = []
    for field_name, run_name in spec.input_runs().items():
        if run_name in produced_earlier:  # produced by an earlier pipeline stage
            earlier = produced_earlier[run_name] if isinstance(produced_earlier, dict) else None
            maybe = {"tokenizer": "tokenizer"} if earlier == "pretrain" else None  # with new_tokens it has one
            if p := _kind_problem(spec, field_name, run_name, earlier, maybe):
                problems.append(p)
            continue
        if os.path.isdir(run_name):  # a local HF directory: it must be one the deployment allows
            from forge_ray.allowed_paths import path_problem

            if problem := path_problem(run_name):
                problems.append(Problem(field_name, *problem))
            continue
        if not storage.exists(run_name):
            problems.append(Problem(field_name, f"names run {run_name!r}, which does not exist in {storage.uri}",
                                    "run that stage first, or chain both in a pipeline spec"))
            continue
        manifest = storage.run(run_name).manifest()
        if manifest.get("status") != "succeeded":
            problems.append(Problem(field_name, f"run {run_name!r} has status {manifest.get('status')!r}, not "
                                                "'succeeded'", f"see: forge status {run_name}"))
        elif p := _kind_problem(spec, field_name, run_name, manifest.get("kind"), manifest.get("outputs")):
            problems.append(p)
    return problems


def source_problems(spec: StageSpec) -> list[Problem]:
    """Local source paths that don't exist (remote URIs are checked when read)."""
    from forge_ray.spec.sections import SourceSpec

    problems = []
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        for i, src in enumerate(value if isinstance(value, list) else []):
            if isinstance(src, SourceSpec) and not src.run and "://" not in src.path \
                    and not any(c in src.path for c in "*?["):
                if not os.path.exists(src.path):
                    problems.append(Problem(f"{f.name}[{i}].path", f"{src.path!r} does not exist",
                                            "check the path (and FORGE_DEMO_DATA for the demo specs)"))
    return problems


def resolve_source_runs(spec, storage: Storage):
    """``spec`` with every ``run:`` source (also inside a section such as ``retrieval``) pointed at
    that run's corpus (Parquet, column ``text``); an augment run's corpus is exempt from
    deduplication unless the source says otherwise."""
    from forge_ray.spec.sections import SourceSpec

    changes = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, (SourceSpec, StageSpec)):
            resolved_section = resolve_source_runs(value, storage)
            if resolved_section is not value:
                changes[f.name] = resolved_section
            continue
        if not isinstance(value, list) or not any(isinstance(s, SourceSpec) and s.run for s in value):
            continue
        changes[f.name] = [_resolved(src, storage) if isinstance(src, SourceSpec) and src.run else src
                           for src in value]
    return dataclasses.replace(spec, **changes) if changes else spec


def _resolved(src, storage: Storage):
    manifest = storage.run(src.run).manifest()
    kind = manifest.get("kind")
    output = (manifest.get("outputs") or {}).get(CORPUS_OUTPUTS.get(kind, ""))
    if not output:
        raise InputError(f"run {src.run!r} ({kind}) has no corpus output to read")
    return dataclasses.replace(src, path=f"{storage.uri.rstrip('/')}/{src.run}/{output}", type="parquet",
                               field="text", include=["**/*.parquet"],
                               dedup=src.dedup if src.dedup is not None else kind != "augment")


def _stage_fn(kind: str) -> Callable:
    target = RUNNERS.get(kind)
    if target is None:
        raise SpecError([Problem("kind", f"kind {kind!r} is defined but cannot run in this version of forge-ray",
                                 f"runnable kinds: {', '.join(RUNNERS)}")])
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


class _RunLogHandler(logging.Handler):
    """Appends forge_ray log records to the run's ``run.log`` (works on any pyarrow.fs)."""

    def __init__(self, run: RunDir):
        super().__init__(logging.INFO)
        self.run = run
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run.append_line("run.log", self.format(record))
        except Exception:  # logging must never break a run
            pass


def execute(spec: StageSpec, ctx: Context, produced_earlier: set[str] = frozenset()) -> dict:
    """Run ``spec`` to completion; returns the final manifest. Raises on failure (after recording it)."""
    fn = _stage_fn(spec.kind)
    problems = input_problems(spec, ctx.storage, produced_earlier) + source_problems(spec)
    if problems:
        raise SpecError(problems)
    run = ctx.storage.run(spec.name)
    parents = sorted(set(spec.input_runs().values()))
    spec_yaml = spec_to_yaml(spec)
    previous = run.manifest() if run.exists() else None
    if previous and previous.get("status") == "succeeded" and run.spec_matches(spec_yaml):
        log.info("✓ %s (%s) already succeeded with this spec", spec.name, spec.kind, extra={"console": True})
        return previous
    attempt = run.create_or_resume(spec.kind, spec_yaml, parents, job_id=ctx.job_id).get("attempts", 1)
    handler = _RunLogHandler(run)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.monotonic()
    try:
        log.info("run %s (%s) started%s", spec.name, spec.kind, f" (attempt {attempt})" if attempt > 1 else "")
        result: StageResult = fn(resolve_source_runs(spec, ctx.storage), run, ctx)
        manifest = run.succeed(result.metrics, result.outputs)
        log.info("run %s succeeded: %s", spec.name, _short(result.metrics))
        if spec.kind != "pipeline":  # one line per finished stage, for the person at the terminal
            line = (f"✓ {spec.name} ({spec.kind}) in {_duration(time.monotonic() - started)}: "
                    f"{_short(_headline(result.metrics), 4)}")
            log.info("%s", line if len(line) <= 80 else line[:79] + "…", extra={"console": True})  # 80 columns
        return manifest
    except BaseException as exc:
        from forge_ray.diagnose import diagnose

        error, _ = diagnose(exc)
        if error.kind == "disk_full":
            error.message += f" (while writing the run under {run.path})"
        log.error("run %s failed: %s\n%s", spec.name, error.message, traceback.format_exc(),
                  extra={"console": False})  # the command prints the error itself, without the traceback
        try:
            run.fail(error)
        except OSError as record_exc:  # e.g. the disk that just filled up: the error itself must still surface
            log.error("could not record the failure in %s: %s", run.file("manifest.json"), record_exc)
        raise
    finally:
        log.removeHandler(handler)


def _short(metrics: dict, n: int = 6) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:n])


#: the figures a stage's one-line summary leads with, when it has them
_HEADLINE = ("loss", "val_loss", "val_bpb", "val_accuracy", "reward_mean", "eval_reward", "vqa_accuracy", "rows",
             "tokens", "kept", "vocab_size")


def _headline(metrics: dict) -> dict:
    first = {k: metrics[k] for k in _HEADLINE if isinstance(metrics.get(k), (int, float))}
    return first or {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
