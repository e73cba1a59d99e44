"""An agent gets reasons it can act on: over a real stdio MCP session, a failing tool answers
with ``{kind, message, hint}`` (not the SDK's bare "Error executing tool X"), validate_spec
names the spec's kind and name even when it is invalid, and the server's stderr holds no
traceback for these expected errors."""

from __future__ import annotations

import asyncio
import json
import sys


def test_failing_tools_answer_with_kind_message_and_hint(tmp_path):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    err = tmp_path / "stderr.txt"

    async def agent() -> dict:
        params = StdioServerParameters(command=sys.executable, args=["-m", "forge_ray.cli", "mcp", "--storage",
                                                                     str(tmp_path / "runs")])
        out = {}
        with open(err, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                for tool, args in (("run_metrics", {"run": "no-such-run"}), ("run_status", {"run": "../x"}),
                                   ("get_schema", {"kind": "bogus"}),
                                   ("validate_spec", {"spec": {"kind": "pretrain", "name": "p", "optim": {"lr": -1}}})):
                    out[tool] = await session.call_tool(tool, args)
        return out

    got = asyncio.run(agent())
    for tool in ("run_metrics", "run_status", "get_schema"):
        result = got[tool]
        assert result.is_error, tool
        text = result.content[0].text
        reason = json.loads(text[text.index("{"):])
        assert set(reason) == {"kind", "message", "hint"} and reason["kind"] == "config" and reason["hint"], reason
    assert "no-such-run" in got["run_metrics"].content[0].text
    assert "not a run name" in got["run_status"].content[0].text
    assert "unknown kind 'bogus'" in got["get_schema"].content[0].text
    pre = json.loads(got["validate_spec"].content[0].text)
    assert pre["ok"] is False and (pre["kind"], pre["name"]) == ("pretrain", "p")
    assert any(e["path"] == "optim.lr" for e in pre["errors"])
    assert "Traceback" not in err.read_text() and "╭" not in err.read_text()
