"""``forge mcp``: the platform as Model Context Protocol tools (stdio transport, the official
``mcp`` SDK), so an agent can validate, submit, watch, compare and stop runs and read their
metrics — the same :mod:`forge_ray.api` calls as the CLI and the web app, every result plain
JSON. Tools that take a spec advertise the spec's own JSON Schema (``forge schema``) as the
``spec`` argument's schema, so a client sees every key, type and default.

Configure a client with ``{"command": "forge", "args": ["mcp", "--storage", "...",
"--address", "http://HEAD:8265"]}``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

from forge_ray import api
from forge_ray.compat import mcp as mcp_compat


def _with_reasons(fn: Callable) -> Callable:
    """A failing tool answers with the reason an agent can act on — ``{"kind", "message",
    "hint"}`` as JSON in the tool error (the SDK's plain "Error executing tool X" otherwise) —
    and an expected error is not logged as a crash with a traceback."""
    from mcp.server.mcpserver.exceptions import ToolError

    from forge_ray.diagnose import diagnose

    @functools.wraps(fn)
    def tool(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reason
            error, _ = diagnose(exc)
            raise ToolError(json.dumps(dataclasses.asdict(error))) from None

    return tool


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    return obj


def build(storage: str | None = None, address: str | None = None):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("forge-ray", instructions=(
        "Build language models on a Ray cluster. validate_spec first (it returns every problem with its key), "
        "then submit; poll run_status until succeeded/failed; a failed run's error.kind (config, data, "
        "nan_loss, oom, worker_lost, timeout, dependency, runtime) and hint say what to change."))

    def validate_spec(spec: dict[str, Any]) -> dict:
        """Check a spec and its inputs without running anything: all problems (path, message,
        hint), parameter count, FLOPs and memory per worker."""
        return api.validate(spec, storage=storage, address=address).to_json()

    def submit(spec: dict[str, Any]) -> dict:
        """Validate, then submit the spec to the Ray cluster's Jobs API; returns the job id and run name."""
        pre = api.validate(spec, storage=storage, address=address)
        if not pre.ok:
            return {"submitted": False, "preflight": pre.to_json()}
        return {"submitted": True, **_plain(api.submit(spec, storage=storage, address=address))}

    def run_status(run: str) -> dict:
        """A run's status, metrics, lineage and error (kind, message, hint), or a Ray job's status."""
        return _plain(api.status(run, storage=storage, address=address))

    def run_metrics(run: str, last: int = 100) -> list[dict]:
        """The last ``last`` rows of a run's metrics.jsonl (loss, val_loss, reward, tokens/s, …)."""
        return api.metrics(run, storage=storage)[-last:]

    def run_logs(run: str, tail_chars: int = 4000) -> str:
        """The end of a run's log (or its Ray job's driver log)."""
        return "".join(api.logs(run, storage=storage, address=address))[-tail_chars:]

    def stop(run: str) -> dict:
        """Stop the Ray job of a run (by run name or job id)."""
        return _plain(api.stop(run, address=address, storage=storage))

    def list_runs() -> list[dict]:
        """Every run under the storage root, newest first: name, kind, status, parents, metrics."""
        return _plain(api.list_runs(storage))

    def compare_runs(models: list[str], tasks: list[dict[str, Any]], name: str | None = None) -> dict:
        """Evaluate models side by side on task files (each {name, path, scorer}); returns the
        report's results: scores with intervals, pairwise win rates, ratings, ranking."""
        info = api.compare(models, tasks, name=name, storage=storage, address=address, show_progress=False)
        return api.report(info.name, storage)["results"]

    def start_sweep(spec: dict[str, Any]) -> dict:
        """Submit a hyper-parameter sweep (kind: sweep) as a Ray job."""
        if spec.get("kind") != "sweep":
            return {"submitted": False, "error": "start_sweep takes a spec with kind: sweep"}
        return submit(spec)

    def get_schema(kind: str | None = None) -> dict:
        """JSON Schema of one spec kind (tokenizer, data, pretrain, sft, dpo, reward_model, rl, eval,
        sweep, pipeline), or of all of them."""
        return api.schema(kind)

    for fn in (validate_spec, submit, run_status, run_metrics, run_logs, stop, list_runs, compare_runs, start_sweep,
               get_schema):
        server.add_tool(_with_reasons(fn), name=fn.__name__, description=(fn.__doc__ or "").strip())
    spec_schema = api.schema()
    for name in ("validate_spec", "submit", "start_sweep"):
        mcp_compat.set_parameter_schema(server, name, "spec", json.loads(json.dumps(
            api.schema("sweep") if name == "start_sweep" else spec_schema)))
    return server


def serve(storage: str | None = None, address: str | None = None) -> None:
    build(storage, address).run("stdio")
