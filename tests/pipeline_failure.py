"""Say why a pipeline run inside a session fixture failed: the stage, its error, its log tail.

A fixture that runs the demo pipeline fails once, loudly, with this text (the tests that need
it are then skipped with a pointer to that one error, see ``conftest.py``), so the reason is
in the summary and not behind 50 setup errors."""

from __future__ import annotations

import json
from pathlib import Path


def _manifest(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def describe_pipeline_failure(storage: Path, pipeline: str, why: str, output_tail: str = "",
                              log_lines: int = 40) -> str:
    """One message: ``why`` (e.g. "exited with 1", "ran past 2700 s") with the first stage that
    did not succeed, its recorded error and the tail of its ``run.log``."""
    stages = _manifest(storage / pipeline).get("stages", [])
    stuck = next((s for s in stages if s.get("status") in ("failed", "running")), None)
    if stuck is None:
        head = f"pipeline {pipeline} {why}; no stage recorded as failed or running"
        return f"{head}\n--- output tail ---\n{output_tail[-3000:]}"
    done = sum(s.get("status") == "succeeded" for s in stages)
    run_dir = storage / stuck["name"]
    error = _manifest(run_dir).get("error") or {}
    head = (f"pipeline {pipeline} {why} at stage {stuck['name']} ({stuck['kind']}, {stuck['status']}; "
            f"{done}/{len(stages)} stages succeeded)")
    if error:
        head += f": {error.get('kind', 'error')}: {error.get('message', '')}"
    return (f"{head}\n--- {run_dir / 'run.log'} (last {log_lines} lines) ---\n{_tail(run_dir / 'run.log', log_lines)}"
            f"\n--- output tail ---\n{output_tail[-1500:]}")
