"""The suite's own time-limit machinery (tests/suite_plugin.py), run on small pytest sessions
of its own in a subprocess: a fixture too close to its limit fails the session, a fixture past
its budget is stopped, and a failing shared fixture is reported once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.time_limits import REPO

CONFTEST = """
from tests import time_limits
from tests.conftest import pytest_configure
time_limits.FIXTURE_LIMITS.update({limits})
"""


def run_session(tmp_path: Path, limits: dict, tests: str, where: str = ".") -> subprocess.CompletedProcess:
    conftest = tmp_path / where / "conftest.py"
    extra = conftest.read_text() if conftest.exists() else ""
    conftest.write_text(CONFTEST.format(limits=limits) + extra)
    (tmp_path / where / "test_inner.py").write_text(textwrap.dedent(tests))
    env = {"PYTHONPATH": str(REPO), "FORGE_TEST_TIME_LEDGER": str(tmp_path / "ledger.json"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "."], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_a_fixture_with_less_than_30_percent_headroom_fails_the_session_though_every_test_passed(tmp_path):
    """The hooks and fixtures live in a sub-directory's conftest, as the suite's do (tests/):
    session fixtures are set up through the session node's hooks, which only a plugin
    registered for the whole session sees."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "conftest.py").write_text(textwrap.dedent("""
        import time, pytest

        @pytest.fixture(scope="session")
        def tight():
            time.sleep(1.0)

        @pytest.fixture(scope="session")
        def roomy():
            time.sleep(1.0)
    """))
    out = run_session(tmp_path, {"tight": 1.2, "roomy": 5}, """
        def test_one(tight, roomy):
            pass
    """, where="sub")
    assert "1 passed" in out.stdout, out.stdout
    assert out.returncode == 1, out.stdout
    summary = out.stdout[out.stdout.index("time limits"):]
    failing = summary.split("tightest limits")[0]
    assert "fixture tight" in failing and "fixture roomy" not in failing, summary
    assert '"site": "fixture roomy"' in (tmp_path / "ledger.json").read_text()


def test_a_fixture_past_its_budget_is_stopped_and_its_dependents_skipped_with_the_reason_once(tmp_path):
    out = run_session(tmp_path, {"hangs": 2}, """
        import time, pytest

        @pytest.fixture(scope="session")
        def hangs():
            time.sleep(60)

        @pytest.mark.parametrize("i", range(5))
        def test_needs_it(hangs, i):
            pass

        def test_independent():
            pass
    """)
    assert out.returncode == 1, out.stdout
    assert "1 passed, 4 skipped, 1 error" in out.stdout, out.stdout
    assert out.stdout.count("fixture hangs ran past its time limit of 2 s") == 2, out.stdout  # the error, one skip line
    assert "SKIPPED [4]" in out.stdout and "its error is reported at test_inner.py::test_needs_it[0]" in out.stdout


def test_a_failing_module_fixture_is_one_error_with_its_message_and_its_other_tests_skipped(tmp_path):
    out = run_session(tmp_path, {}, """
        import pytest

        @pytest.fixture(scope="module")
        def broken():
            raise RuntimeError("stage demo-vlm failed: out of memory")

        def test_a(broken):
            pass

        def test_b(broken):
            pass
    """)
    assert "1 skipped, 1 error" in out.stdout, out.stdout
    assert "ERROR test_inner.py::test_a - RuntimeError: stage demo-vlm failed: out of memory" in out.stdout
