"""The one surface under the CLI, the UI, job entrypoints and agents.

Every function takes plain values (a spec path, a dict, or a typed spec) and returns plain
JSON-serialisable dataclasses, so a program can call forge-ray the way a person uses the
CLI. Failures of *input* raise :class:`~forge_ray.spec.SpecError` (or a ``DataError``)
before anything starts; failures of a *run* are recorded in its manifest and re-raised.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_ray import jobs_client
from forge_ray.diagnose import diagnose  # noqa: F401 - part of this surface: (RunError, exit code) of a failure
from forge_ray.preflight import Preflight, SpecLike, resolve, validate  # noqa: F401 - part of this surface
from forge_ray.runs import Storage
from forge_ray.spec import SpecError, spec_to_dict
from forge_ray.spec.typed import Problem


@dataclass
class RunInfo:
    name: str
    kind: str
    status: str
    run_dir: str
    metrics: dict = field(default_factory=dict)
    error: dict | None = None
    job_id: str | None = None
    parents: list[str] = field(default_factory=list)


@dataclass
class JobInfo:
    job_id: str
    name: str
    address: str
    status: str
    entrypoint: str


def input_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input is wrong" (exit code 2), whatever stage raised them."""
    from forge_ray.allowed_paths import PathNotAllowed
    from forge_ray.data.sources import DataError
    from forge_ray.runs import RunNameError

    return SpecError, DataError, FileNotFoundError, RunNameError, PathNotAllowed


def run(spec: SpecLike, overrides: list[str] | None = None, storage: str | None = None,
        address: str | None = None, show_progress: bool = True, job_id: str | None = None) -> RunInfo:
    """Run a spec here (connecting to ``address``/``RAY_ADDRESS`` or a local Ray) and wait."""
    from forge_ray.runner import Context, execute

    typed = resolve(spec, overrides)
    ctx = Context(Storage(storage), address=address, show_progress=show_progress,
                  job_id=job_id or os.environ.get("RAY_JOB_SUBMISSION_ID"))
    execute(typed, ctx)
    return status(typed.name, storage)


def status(run_or_job: str, storage: str | None = None, address: str | None = None) -> RunInfo | JobInfo:
    """A run's manifest summary, or a Ray job's status when no run has that name."""
    store = Storage(storage)
    store.checked_name(run_or_job)  # a job id is a plain name too; `../x` is neither
    if store.exists(run_or_job):
        m = store.run(run_or_job).manifest()
        return RunInfo(name=m["name"], kind=m["kind"], status=m["status"], run_dir=store.run(run_or_job).path,
                       metrics=m.get("metrics", {}), error=m.get("error"), job_id=m.get("job_id"),
                       parents=m.get("parents", []))
    return _job_status(jobs_client.connect(address), run_or_job)


def _job_status(jobs: jobs_client.RayJobs, job_id: str) -> JobInfo:
    info = jobs.client.get_job_info(job_id)
    return JobInfo(job_id=job_id, name=(info.metadata or {}).get("forge_run", ""), address=jobs.address,
                   status=str(getattr(info.status, "value", info.status)), entrypoint=info.entrypoint)


def list_runs(storage: str | None = None) -> list[RunInfo]:
    store = Storage(storage)
    return [RunInfo(name=m["name"], kind=m["kind"], status=m["status"], run_dir=store.run(m["name"]).path,
                    metrics=m.get("metrics", {}), error=m.get("error"), job_id=m.get("job_id"),
                    parents=m.get("parents", [])) for m in store.list_runs()]


def metrics(run_name: str, storage: str | None = None) -> list[dict]:
    """Every line of the run's ``metrics.jsonl``."""
    store = Storage(storage)
    if not store.exists(store.checked_name(run_name)):
        raise FileNotFoundError(f"no run {run_name!r} in {store.uri} (forge runs lists them)")
    return store.run(run_name).metrics()


def import_model(path: str, name: str, storage: str | None = None) -> RunInfo:
    """Register a local HF model directory (safetensors only, Llama/Mistral/Mixtral families,
    no remote code) as run ``name``: its ``model`` and ``tokenizer`` feed later stages."""
    from forge_ray.models.importer import import_model as _import

    _import(path, name, Storage(storage))
    return status(name, storage)


def export(run_name: str, storage: str | None = None, step: int | None = None, out: str | None = None) -> dict:
    """An HF directory (safetensors, config, tokenizer) from a training run's newest
    checkpoint, or the one at ``step``; works while the run is still going or after it failed.
    Default destination: ``RUN/exports/step-N``."""
    from forge_ray.train.export import export_checkpoint

    return export_checkpoint(Storage(storage), run_name, step, out)


def compare(models: list[str], tasks: list[dict], name: str | None = None, judges: list[str] | None = None,
            storage: str | None = None, address: str | None = None, show_progress: bool = True,
            **eval_fields: Any) -> RunInfo:
    """Evaluate ``models`` (runs, HF directories, ``random:RUN``) side by side on ``tasks``
    (``{"name", "path", "scorer", ...}``) as an ``eval`` run; its ``report/`` holds the result."""
    spec = {"kind": "eval", "name": name or "compare-" + "-vs-".join(m.replace("random:", "random-") for m in models),
            "models": list(models), "tasks": list(tasks), "judges": list(judges or ["reference"]), **eval_fields}
    return run(spec, storage=storage, address=address, show_progress=show_progress)


def sweep(spec: SpecLike, overrides: list[str] | None = None, storage: str | None = None,
          address: str | None = None, show_progress: bool = True) -> dict:
    """Run a ``sweep`` spec (Ray Tune over a training spec) and return its results: one row
    per trial (config, metric, steps, completed / stopped early) and the best."""
    typed = resolve(spec, overrides)
    if typed.kind != "sweep":
        raise SpecError([Problem("kind", f"api.sweep runs sweep specs, not {typed.kind!r}")])
    info = run(typed, storage=storage, address=address, show_progress=show_progress)
    results = json.loads(Storage(storage).run(info.name).read_text("results.json"))
    return {"run": info.name, "status": info.status, **results}


def report(run_name: str, storage: str | None = None) -> dict:
    """An eval run's results (``results.json``), its Markdown summary and where the report is."""
    run_dir = Storage(storage).run(run_name)
    if not run_dir.exists("report/results.json"):
        raise FileNotFoundError(f"run {run_name!r} has no report/results.json (is it an eval run that succeeded?)")
    return {"run": run_name, "report_dir": run_dir.file("report"), "html": run_dir.file("report/report.html"),
            "markdown": run_dir.read_text("report/report.md"),
            "results": json.loads(run_dir.read_text("report/results.json"))}


# ---------------------------------------------------------------------------- arena


def input_choices(kind: str, field_name: str, storage: str | None = None) -> list[str]:
    """Succeeded runs (newest first) that a ``kind`` stage's ``field_name`` can name — what a form's
    input picker should offer (the same table preflight checks with)."""
    from forge_ray.runner import INPUT_KINDS

    if field_name == "models":  # eval: any model
        accepted = ("pretrain", "sft", "dpo", "rl", "import", "reward_model", "vlm")
    else:
        accepted = INPUT_KINDS.get((kind, field_name)) or INPUT_KINDS.get(("*", field_name)) or ()
    return [m["name"] for m in Storage(storage).list_runs() if m.get("status") == "succeeded" and (
        m.get("kind") in accepted or (field_name == "tokenizer" and "tokenizer" in m.get("outputs", {})))]


def chat_models(storage: str | None = None) -> list[str]:
    """What the arena can talk to: succeeded runs with a generative model (newest first), then
    the endpoints ``forge serve`` started (``URL#run``; any other endpoint can be typed in)."""
    from forge_ray import serve

    store = Storage(storage)
    runs = [m["name"] for m in store.list_runs()  # text models only: a VLM needs an image, a reward model answers none
            if m.get("status") == "succeeded" and "model" in m.get("outputs", {})
            and m.get("kind") not in ("reward_model", "vlm")]
    return runs + [f"{s['url']}#{s['run']}" for s in serve.running(store)]


def generate(run_name: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
             storage: str | None = None) -> Iterator[str]:
    """A run's (or an endpoint's, ``URL#model``) answer to ``prompt``, streamed: the text so far
    after each token. An endpoint gets ``$FORGE_ENDPOINT_API_KEY`` only when its base URL is
    one of ``$FORGE_ENDPOINT_URLS`` (see :func:`forge_ray.eval.endpoint.endpoint_key`)."""
    from forge_ray.eval.arena import stream_answer
    from forge_ray.eval.endpoint import endpoint_key, is_endpoint, stream_endpoint

    if is_endpoint(run_name):
        yield from stream_endpoint(run_name, prompt, max_new_tokens, temperature, endpoint_key(run_name))
        return
    store = Storage(storage)
    if not store.is_local:
        raise ValueError("the arena loads models from local or mounted storage; export the run first")
    run = store.run(run_name)
    outputs = run.manifest().get("outputs", {})
    if "model" not in outputs:
        raise ValueError(f"run {run_name!r} has no model output")
    yield from stream_answer(run.file(outputs["model"]), prompt, max_new_tokens, temperature)


def example_prompts(storage: str | None = None, limit: int = 50) -> list[str]:
    """Prompts of the eval runs' task items (for the arena to pick from), unique, in order."""
    from forge_ray.eval.arena import eval_prompts

    return eval_prompts(Storage(storage), limit)


def vote(model_a: str, model_b: str, prompt: str, choice: str, storage: str | None = None, **extra: Any) -> dict:
    """Record an arena vote: ``a``, ``b``, ``tie`` or ``both_bad``."""
    from forge_ray.runs import record_vote

    return record_vote(Storage(storage), model_a, model_b, prompt, choice, **extra)


def leaderboard(storage: str | None = None) -> dict:
    """Arena ratings from every vote, and the rankings of the eval runs' reports."""
    from forge_ray.eval.arena import eval_rankings
    from forge_ray.eval.arena import leaderboard as arena_board
    from forge_ray.runs import arena_votes

    store = Storage(storage)
    return {"arena": arena_board(arena_votes(store)), "evals": eval_rankings(store)}


# ---------------------------------------------------------------------------- Ray Jobs


def _driver_resources(explicit: dict | None) -> dict | None:
    if explicit is not None:
        return explicit or None
    raw = os.environ.get("FORGE_DRIVER_RESOURCES", "").strip()
    try:
        value = json.loads(raw) if raw else {}
        if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
            raise ValueError("not a mapping of resource name to amount")
    except ValueError as exc:
        raise SpecError([Problem("FORGE_DRIVER_RESOURCES", f"{raw!r} is not valid: {exc}",
                                 'e.g. FORGE_DRIVER_RESOURCES=\'{"forge_driver": 1}\'')]) from None
    return value or None


def _on_this_machine(address: str) -> bool:
    """A cluster on loopback runs this checkout already. Its nodes also share one session
    directory, where every node's runtime-env agent would unpack (and replace) the same
    working_dir under the running driver: so nothing is shipped there."""
    from urllib.parse import urlparse

    return (urlparse(address).hostname or "") in ("127.0.0.1", "localhost", "::1")


def submit(spec: SpecLike, overrides: list[str] | None = None, storage: str | None = None,
           address: str | None = None, working_dir: str | None = None, runtime_env: dict | None = None,
           driver_resources: dict | None = None) -> JobInfo:
    """Validate here, then submit ``forge run`` as a Ray job; the run is recorded as queued.
    ``working_dir`` is shipped to the cluster (default: this checkout, unless the cluster is on
    loopback; ``""`` ships nothing: the cluster's image has forge-ray installed).
    ``driver_resources`` (default: ``$FORGE_DRIVER_RESOURCES``, JSON) is what each job's driver
    holds while it runs, e.g. ``{"forge_driver": 1}`` on a head advertising ``forge_driver: 2``:
    submissions beyond the slots wait as PENDING instead of crowding the head."""
    typed = resolve(spec, overrides)
    pre = validate(typed, storage=storage, address=address)
    if not pre.ok:
        raise SpecError([Problem(**e) for e in pre.errors])
    driver = _driver_resources(driver_resources)
    jobs = jobs_client.connect(address)
    store_uri = Storage(storage).uri
    if "://" not in store_uri:
        store_uri = str(Path(store_uri).resolve())  # the job runs elsewhere: give it an absolute root
    from forge_ray.spec.redact import redact

    secret_names: set[str] = set()  # the job expands ${VAR} again from its runtime env, not from its command line
    spec_json = json.dumps(redact(spec_to_dict(typed), used=secret_names), separators=(",", ":"))
    entrypoint = f"python -m forge_ray.cli run --spec-json {shlex.quote(spec_json)} --storage {shlex.quote(store_uri)}"
    env = dict(runtime_env or {})
    # a job's log is read as a file (forge logs, the UI, the dashboard): it keeps the vendors' output too
    env["env_vars"] = {"FORGE_VERBOSE": "1", **env.get("env_vars", {})}
    if secret_names:
        env["env_vars"] = {**env.get("env_vars", {}), **{n: os.environ[n] for n in secret_names}}
    if working_dir != "" and (working_dir or not _on_this_machine(jobs.address)):
        env = {"working_dir": working_dir or str(Path(__file__).resolve().parents[1]),
               "excludes": [".venv", "forge_runs", ".git", "**/__pycache__", "*.egg-info"], **env}
    job_id = f"forge-{typed.name}-{int(time.time())}"
    run = Storage(storage).run(typed.name)
    from forge_ray.spec import spec_to_yaml

    run.create_or_resume(typed.kind, spec_to_yaml(typed), sorted(set(typed.input_runs().values())),
                         status="queued", job_id=job_id)
    for attempt in range(30):
        try:
            jobs.client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=env, entrypoint_resources=driver,
                              metadata={"forge_run": typed.name, "forge_kind": typed.kind})
            break
        except RuntimeError as exc:  # just after a node died the head may briefly have no agent to hand the job to
            if "No available agent" not in str(exc) or attempt == 29:
                raise
            time.sleep(2.0)
    return JobInfo(job_id=job_id, name=typed.name, address=jobs.address, status="PENDING", entrypoint=entrypoint)


def logs(run_or_job: str, storage: str | None = None, address: str | None = None, follow: bool = False) -> Iterator[str]:
    """Log text of a run (its ``run.log``, or its Ray job's driver log) or of a job id."""
    store = Storage(storage)
    job_id = store.checked_name(run_or_job)
    if store.exists(run_or_job):
        run = store.run(run_or_job)
        job_id = run.manifest().get("job_id")
        if not job_id or not (address or os.environ.get("RAY_ADDRESS")):
            yield from _follow_file(run, follow)
            return
    jobs = jobs_client.connect(address)
    seen = 0
    while True:  # poll rather than tail_job_logs' websocket: works through any HTTP proxy
        text = jobs.client.get_job_logs(job_id)
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if not follow or _job_status(jobs, job_id).status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return
        time.sleep(1.0)


def _follow_file(run, follow: bool) -> Iterator[str]:
    seen = 0
    while True:
        text = run.read_text("run.log") if run.exists("run.log") else ""
        if len(text) > seen:
            yield text[seen:]
            seen = len(text)
        if not follow or run.manifest().get("status") in ("succeeded", "failed"):
            return
        time.sleep(1.0)


def stop(job_id: str, address: str | None = None, storage: str | None = None) -> JobInfo:
    """Stop a Ray job (by job id, or by the run name it was submitted for)."""
    store = Storage(storage)
    if store.exists(store.checked_name(job_id)):
        job_id = store.run(job_id).manifest().get("job_id") or job_id
    jobs = jobs_client.connect(address)
    jobs.client.stop_job(job_id)
    return _job_status(jobs, job_id)


def serve(run_name: str, storage: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, replicas: str | None = None, cpus_per_replica: float = 1.0,
          gpus_per_replica: float = 0.0, address: str | None = None) -> dict:
    """Serve a run's model on an OpenAI-compatible API and wait until it answers: one vLLM
    server on this machine, or (``replicas``: ``N`` or ``MIN:MAX``) Ray Serve replicas on the
    cluster at ``address``. A host other than loopback needs ``api_key``. Returns the record
    (``url``, …) that :func:`stop_serving` and the arena use."""
    from forge_ray import serve as serving

    return serving.start(Storage(storage), run_name, host, port, api_key, replicas=replicas,
                         cpus_per_replica=cpus_per_replica, gpus_per_replica=gpus_per_replica, address=address)


def stop_serving(run_name: str, storage: str | None = None) -> dict:
    """Stop the server (or the Ray Serve application) of a run."""
    from forge_ray import serve as serving

    return serving.stop(Storage(storage), run_name)


def schema(kind: str | None = None) -> dict:
    from forge_ray.spec import schema as _schema

    return _schema(kind)


def demo_data(out_dir: str, seed: int = 0) -> dict[str, Any]:
    from forge_ray.demo.corpus import write_demo_data

    return write_demo_data(out_dir, seed)
