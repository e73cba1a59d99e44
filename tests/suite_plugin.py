"""The suite's time limits at work (pytest hooks, imported by ``tests/conftest.py``).

- Every fixture's setup runs under its own budget (:data:`tests.time_limits.FIXTURE_LIMITS`),
  armed as an alarm; pytest-timeout's per-test limit covers only tests' bodies
  (``timeout_func_only``), so a fixture that trains for 16 minutes is not cut by a 15-minute
  per-test limit, and a hung fixture or test is still caught.
- A session or module fixture that fails is reported once, on the test that first needed it;
  every other test that needs it is skipped with a pointer to that error, so the summary says
  why in one line instead of repeating 50 bare setup errors.
- Fixture setups, test bodies and the waits that go through ``forge()``/``wait_for``/
  :func:`~tests.time_limits.limited` are recorded; at the end, a limit with less than 30 %
  headroom over its measured duration fails the session, with a table.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import time_limits

#: (fixture, "" for session scope or the module's path) → why it failed, where it was reported
_FAILED_FIXTURES: dict[tuple[str, str], str] = {}


def _scope_key(scope: str, nodeid: str) -> str | None:
    return "" if scope == "session" else nodeid.split("::")[0] if scope in ("package", "module") else None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Each fixture's setup runs under its own budget (an alarm) and is recorded in the time-limit
    ledger; a session or module fixture that fails is remembered, so that the other tests needing
    it are skipped with a pointer to the one error instead of repeating it."""
    name = fixturedef.argname
    limit = time_limits.FIXTURE_LIMITS.get(name, time_limits.DEFAULT_FIXTURE_LIMIT)
    start = time.monotonic()
    try:
        with time_limits.alarm(limit, f"fixture {name}"):
            result = yield
    except BaseException as exc:
        time_limits.record(f"fixture {name}", limit, time.monotonic() - start, finished=False)
        test = request._pyfuncitem.nodeid  # the test whose setup ran it
        key = _scope_key(fixturedef.scope, test)
        if key is not None and not isinstance(exc, pytest.skip.Exception):
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _FAILED_FIXTURES[(name, key)] = f"{first_line[:300]} (its error is reported at {test})"
        if isinstance(exc, time_limits.BudgetExceeded):
            raise pytest.fail.Exception(str(exc), pytrace=False) from None
        raise
    time_limits.record(f"fixture {name}", limit, time.monotonic() - start)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    module = item.nodeid.split("::")[0]
    for name in item.fixturenames:
        for key in ("", module):
            if (name, key) in _FAILED_FIXTURES:
                pytest.skip(f"needs fixture {name}, which failed: {_FAILED_FIXTURES[(name, key)]}")


def _test_timeout(item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value) if value else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "call" and (limit := _test_timeout(item)):
        time_limits.record(item.nodeid, limit, call.duration, finished=report.passed)
    return report


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_LEDGER_PATH] = time_limits.write_ledger()
    if time_limits.too_tight() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_LEDGER_PATH = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.section("time limits")
    tight = time_limits.too_tight()
    if tight:
        tr.write_line(f"FAILED: {len(tight)} time limit(s) leave less than {time_limits.HEADROOM - 1:.0%} headroom "
                      "over what they guard; raise the limit (and write the measured time beside it) or make the "
                      "work cheaper:", red=True, bold=True)
        for line in time_limits.table(tight):
            tr.write_line("  " + line, red=True)
    finished = [e for e in time_limits.LEDGER if e.finished and e.elapsed_s >= 1.0]
    tr.write_line("tightest limits this run (measured of limit):")
    for line in time_limits.table(finished)[:10]:
        tr.write_line("  " + line)
    if _LEDGER_PATH in config.stash:
        tr.write_line(f"every limit and its measured duration: {config.stash[_LEDGER_PATH]}")
