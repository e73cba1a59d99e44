"""Reward functions: built-ins, the code sandbox's limits, loading by dotted path, weights."""

from __future__ import annotations

import doctest
import socket

import pytest

from forge_ray.rl import rewards
from forge_ray.rl.rewards import code, functions


def half_reward(prompts, completions, **_):  # a user's own reward, loaded by dotted path below
    return [0.5] * len(completions)


def test_docstring_examples_hold():
    for module in (functions, code):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__


def test_builtin_rewards():
    assert functions.normalized_match(["q"] * 2, ["Team Otter.\nmore", "Team Lynx"],
                                      answer=["team otter", "Team Otter"]) == [1.0, 0.0]
    assert functions.exact_match(["q"] * 3, ["  Team Otter \nmore", "team otter", "Team Otter."],
                                 answer=["Team Otter"] * 3) == [1.0, 0.0, 0.0]
    assert functions.contains_answer(["q"], ["The part number of X is AB-1234."], answer=["AB-1234"]) == [1.0]
    assert functions.contains_answer(["q"], ["AB-12345"], answer=["AB-1234"]) == [0.0]  # whole words only
    assert functions.numeric_match(["q"] * 3, ["about 1,000 units", "none", "3.5"], answer=["1000", "1", "3.50"]) == [1.0, 0.0, 1.0]
    assert functions.regex_match(["q"] * 2, ["AB-1234", "ab-1234"], pattern=r"^[A-Z]{2}-\d{4}$") == [1.0, 0.0]
    schema = {"type": "object", "required": ["a"]}
    assert functions.json_valid(["q"] * 3, ['{"a": 1}', '{"b": 1}', "{oops"], schema=schema) == [1.0, 0.0, 0.0]
    assert functions.length_penalty(["q"] * 2, ["x" * 10, "x" * 40], max_chars=20) == [0.0, -1.0]


def test_code_passes_fails_and_times_out():
    assert code.run_with_tests("def f(x):\n    return x * 2", "assert f(3) == 6").reason == "passed"
    assert code.run_with_tests("def f(x):\n    return x", "assert f(3) == 6").reason == "failed"
    assert code.run_with_tests("while True:\n    pass", "", timeout_s=1).reason == "timeout"
    assert code.run_with_tests("import sys; sys.exit(3)", "").reason == "error: exit 3"


def test_sandbox_limits_memory_and_hides_the_environment(monkeypatch):
    out = code.run_with_tests("x = bytearray(2 * 1024 ** 3)", "", memory_mb=256)
    assert not out.passed and "MemoryError" in out.stderr_tail
    monkeypatch.setenv("FORGE_SECRET_TOKEN", "s3cret")
    leak = "import os\nassert 'FORGE_SECRET_TOKEN' not in os.environ, 'leaked'\nassert os.getcwd() == os.environ['HOME']"
    assert code.run_with_tests(leak, "").passed


def test_sandbox_has_no_network():
    if not code.sandbox_capabilities()["no_network"]:
        pytest.skip("this kernel does not allow unprivileged network namespaces (unshare -rn)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        reach = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
        out = code.run_with_tests(reach, "")
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from outside the sandbox
    assert not out.passed and ("ConnectionRefused" in out.stderr_tail or "unreachable" in out.stderr_tail), out


def test_load_by_name_or_dotted_path_and_combine():
    assert rewards.load("exact_match") is functions.exact_match
    assert rewards.load("tests.unit.test_rl_rewards:half_reward") is half_reward
    assert rewards.load("tests.unit.test_rl_rewards.half_reward") is half_reward
    with pytest.raises(KeyError, match="did you mean 'exact_match'"):
        rewards.load("exact_mach")
    with pytest.raises(KeyError, match="cannot import"):
        rewards.load("tests.unit.test_rl_rewards:nope")
    total = rewards.combine({"exact_match": 2.0, "tests.unit.test_rl_rewards:half_reward": -1.0})
    assert total(["q", "q"], ["yes", "no"], answer=["yes", "yes"]) == [1.5, -0.5]
