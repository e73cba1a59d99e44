"""An agent's view: the `forge mcp` server driven by the official MCP SDK client over stdio.
It lists the tools (spec tools advertise the spec schema), validates a bad spec and gets
structured errors naming the keys, submits a good one to the session cluster's Jobs API,
polls its status to success and reads its metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from tests.conftest import REPO, VENV_BIN

pytestmark = pytest.mark.slow

TOOLS = {"validate_spec", "submit", "run_status", "run_metrics", "run_logs", "stop", "list_runs", "compare_runs",
         "start_sweep", "get_schema"}


def _json(result) -> object:
    """A tool's result: lists come back as structured ``{"result": [...]}``, dicts as JSON text."""
    assert not result.is_error, result.content
    structured = getattr(result, "structured_content", None)
    if isinstance(structured, dict) and set(structured) == {"result"}:
        return structured["result"]
    return json.loads(result.content[0].text)


async def _agent(storage: str, address: str) -> dict:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import get_default_environment, stdio_client

    # an MCP client starts the server with a few safe variables only (HOME, PATH, …): the
    # cluster's token settings go in its server entry's `env`, as a user's client config has them
    ray_auth = {k: v for k, v in os.environ.items() if k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    params = StdioServerParameters(command=str(VENV_BIN / "forge"), cwd=str(REPO),
                                   args=["mcp", "--storage", storage, "--address", address],
                                   env={**get_default_environment(), **ray_auth})
    seen: dict = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        seen["tools"] = set(tools)
        seen["spec_schema"] = tools["validate_spec"].input_schema["properties"]["spec"]
        seen["bad"] = _json(await session.call_tool("validate_spec", {"spec": {
            "kind": "pretrain", "name": "mcp-bad", "tokenizer": "demo-tokenizer", "dataset": "demo-corpus",
            "optim": {"lr": -1}, "trian": {}}}))
        good = {"kind": "pretrain", "name": "mcp-pretrain", "tokenizer": "demo-tokenizer", "dataset": "demo-corpus",
                "model": {"preset": "tiny", "num_layers": 1}, "optim": {"lr": 3e-3, "warmup_steps": 2},
                "train": {"max_steps": 10, "micro_batch_size": 4, "seq_len": 64, "eval_every": 5,
                          "checkpoint_every": 0}, "resources": {"num_workers": 1}}
        seen["submitted"] = _json(await session.call_tool("submit", {"spec": good}))
        deadline = time.time() + 480
        while True:
            status = _json(await session.call_tool("run_status", {"run": "mcp-pretrain"}))
            if status["status"] in ("succeeded", "failed") or time.time() > deadline:
                break
            await asyncio.sleep(2)
        seen["status"] = status
        seen["metrics"] = _json(await session.call_tool("run_metrics", {"run": "mcp-pretrain", "last": 50}))
        seen["runs"] = _json(await session.call_tool("list_runs", {}))
    return seen


def test_an_agent_validates_submits_polls_and_reads_metrics(ray_cluster, demo_runs):
    seen = asyncio.run(_agent(str(demo_runs), ray_cluster["dashboard"]))
    assert seen["tools"] == TOOLS
    assert "$defs" in seen["spec_schema"]  # the spec's own JSON Schema, every kind's keys
    bad = seen["bad"]
    assert bad["ok"] is False
    paths = {e["path"] for e in bad["errors"]}
    assert {"trian", "optim.lr"} <= paths, bad["errors"]  # all problems at once, each with its key
    assert any("train" in (e["hint"] + e["message"]) for e in bad["errors"] if e["path"] == "trian")
    assert seen["submitted"]["submitted"] is True and seen["submitted"]["job_id"]
    assert seen["status"]["status"] == "succeeded", seen["status"]
    losses = [row["loss"] for row in seen["metrics"] if "loss" in row]
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert any(r["name"] == "mcp-pretrain" for r in seen["runs"])
