"""Run names cannot climb out of the storage root: every face that takes a run name (the API,
the CLI, the UI's callbacks, the MCP tools over a real stdio session, the arena's model loader)
refuses ``../x``, ``/abs``, ``a/../../b`` and a symlink out of the root, and reads nothing there."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forge_ray import api
from forge_ray.runs import RunNameError, Storage

SECRET = "outside-the-root-secret"
BAD = ["../outside", "/abs/outside", "a/../../outside", "link", "..", ".hidden", "a\\..\\b", ""]


@pytest.fixture
def roots(tmp_path):
    """A storage root with one run, and beside it a run-shaped directory holding a secret."""
    root, outside = tmp_path / "runs", tmp_path / "outside"
    for d, name in ((root / "good", "good"), (outside, "outside")):
        (d / "report").mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"name": name, "kind": "eval", "status": "succeeded",
                                                     "outputs": {"report": "report", "model": "model"}}))
        (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "note": SECRET}) + "\n")
        (d / "run.log").write_text(f"{SECRET}\n")
        (d / "report" / "results.json").write_text(json.dumps({"note": SECRET}))
        (d / "report" / "report.md").write_text(SECRET)
    (tmp_path / "abs").mkdir()
    os.symlink(outside, tmp_path / "abs" / "outside")
    os.symlink(outside, root / "link")  # a run directory that is a symlink out of the root
    return root


def _bad_names(roots: Path) -> list[str]:
    return [n.replace("/abs/", f"{roots.parent}/abs/") for n in BAD]


def test_the_storage_refuses_every_name_that_is_not_a_plain_one_inside(roots):
    store = Storage(str(roots))
    assert store.run("good").manifest()["name"] == "good"
    for name in _bad_names(roots):
        with pytest.raises(RunNameError):
            store.run(name)
        assert not store.exists(name)
    assert [m["name"] for m in store.list_runs()] == ["good"]  # the symlinked one is not listed


def test_every_api_entry_point_refuses_them(roots):
    storage = str(roots)
    calls = {
        "status": lambda n: api.status(n, storage=storage),
        "metrics": lambda n: api.metrics(n, storage=storage),
        "logs": lambda n: "".join(api.logs(n, storage=storage)),
        "report": lambda n: api.report(n, storage=storage),
        "stop": lambda n: api.stop(n, storage=storage),
        "generate (arena)": lambda n: list(api.generate(n, "hi", storage=storage)),
    }
    for call in calls.values():
        for name in _bad_names(roots):
            with pytest.raises(RunNameError):
                call(name)
    assert api.metrics("good", storage=storage)[0]["loss"] == 1.0


def test_the_ui_callbacks_show_a_refusal_and_nothing_from_outside(roots):
    from ui.app import App

    app = App(str(roots), address=None)
    for name in _bad_names(roots):
        if not name:
            continue
        shown = app.detail(name)
        assert "not a run name" in shown[0] or "leads out of the storage root" in shown[0], shown
        assert SECRET not in json.dumps([s for s in shown if isinstance(s, str)])
        for callback in (app.links, app.plot):
            with pytest.raises(RunNameError):
                callback(name)


def test_the_cli_exits_2_naming_the_name(roots):
    for cmd in ("status", "logs", "stop", "report", "export"):
        out = subprocess.run([sys.executable, "-m", "forge_ray.cli", cmd, "../outside", "--storage", str(roots)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "'../outside' is not a run name" in out.stderr, (cmd, out.stderr)
        assert SECRET not in out.stdout + out.stderr


def test_the_mcp_tools_refuse_them_over_a_real_session(roots):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def agent() -> list:
        params = StdioServerParameters(command=sys.executable, args=["-m", "forge_ray.cli", "mcp", "--storage",
                                                                     str(roots)])
        got = []
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            for tool in ("run_status", "run_metrics", "run_logs", "stop"):
                for name in ("../outside", "link", str(roots.parent / "abs" / "outside")):
                    got.append((tool, name, await session.call_tool(tool, {"run": name})))
        return got

    for tool, name, result in asyncio.run(agent()):
        text = json.dumps([getattr(c, "text", "") for c in result.content])
        assert result.is_error and SECRET not in text, (tool, name, text)
