"""Shared fixtures: one demo corpus and one Ray cluster per test session.

The Ray cluster is a real ``ray start --head`` on loopback (with the dashboard, so the Jobs
API is real too), started once and reused by every test that needs Ray; tests that run
stages in-process connect to it with ``ray.init(address=...)``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import time_limits
from tests.pipeline_failure import describe_pipeline_failure

REPO = Path(__file__).resolve().parents[1]
# Ray 2.60 clusters use token auth and Ray reads the mode once, at import: set it before any
# test imports ray, so this process and the CLIs it starts can join the session's cluster.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def _session_auth_token() -> None:
    """A machine that has never made a Ray token (a fresh CI box) gets one for this session,
    in a private temporary file every process started from here reads (``RAY_AUTH_TOKEN_PATH``)
    — without it ``ray start`` refuses to start in token mode. The user's own token, where
    there is one, is used as it is; nothing is written into ``~/.ray``."""
    import secrets
    import tempfile

    from forge_ray.runner import ray_auth_token  # looks where Ray looks; imports no ray

    if ray_auth_token():
        return
    token_file = Path(tempfile.mkdtemp(prefix="forge-test-ray-")) / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)


_session_auth_token()
VENV_BIN = Path(sys.executable).parent


def forge(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the ``forge`` CLI as a user would, capturing output; the call's duration goes to
    the time-limit ledger against ``timeout`` under the caller's file:line. The slowest call
    under the default 600 s, measured on a clean clone: `forge serve --replicas 2` (75 s)."""
    full_env = {**os.environ, **(env or {})}
    with time_limits.limited(timeout, time_limits.caller_site()):
        return subprocess.run([str(VENV_BIN / "forge"), *args], capture_output=True, text=True, cwd=REPO,
                              env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from forge_ray.demo.corpus import write_demo_data

    out = tmp_path_factory.mktemp("demo-data")
    write_demo_data(out, seed=0)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head node on loopback: ``{"gcs": "127.0.0.1:P", "dashboard": "http://127.0.0.1:D"}``.
    A start that fails (a port picked here taken by the time Ray binds it) is retried on new
    ports; the last failure is reported with Ray's own words. ``FORGE_TEST_RAY_GCS`` and
    ``FORGE_TEST_RAY_DASHBOARD`` give a running cluster instead (not stopped at the end)."""
    if os.environ.get("FORGE_TEST_RAY_GCS"):  # iterating on one module: a running cluster, left running
        yield {"gcs": os.environ["FORGE_TEST_RAY_GCS"], "dashboard": os.environ["FORGE_TEST_RAY_DASHBOARD"]}
        return
    ray = str(VENV_BIN / "ray")
    # the venv's python first on PATH, as on a cluster image: job entrypoints run `python`
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for attempt in range(3):
        gcs_port, dash_port = _free_port(), _free_port()
        cmd = [ray, "start", "--head", "--num-cpus=2", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--include-dashboard=true",
               "--disable-usage-stats"]
        with time_limits.limited(180) as limit_s:  # measured 4.2 s on a clean clone
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s, env=env)
        if done.returncode == 0 and gcs_port != dash_port:
            break
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        if attempt == 2:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            pytest.fail(f"`ray start --head` failed 3 times (exit {done.returncode}); the last output:\n{tail}",
                        pytrace=False)
    info = {"gcs": f"127.0.0.1:{gcs_port}", "dashboard": f"http://127.0.0.1:{dash_port}"}
    _wait_for_jobs_api(info["dashboard"])
    yield info
    import ray as ray_mod

    if ray_mod.is_initialized():
        ray_mod.shutdown()
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def _wait_for_jobs_api(address: str, timeout: float = 120) -> None:
    from forge_ray import jobs_client

    deadline = time.time() + timeout
    while True:
        try:
            jobs_client.connect(address).client.list_jobs()
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(2)


@pytest.fixture(scope="session")
def ray_connected(ray_cluster):
    """This test process connected as a driver to the session's cluster."""
    import ray

    from forge_ray.runner import use_token_auth_if_available

    if not ray.is_initialized():
        use_token_auth_if_available()
        ray.init(address=ray_cluster["gcs"], logging_level="WARNING")
    return ray_cluster


def wait_for(predicate, timeout: float = 300, every: float = 2.0):
    """Poll ``predicate`` until it returns something truthy (returned), or time out; the wait
    goes to the time-limit ledger under the caller's file:line."""
    with time_limits.limited(timeout, time_limits.caller_site()):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(every)
        raise TimeoutError(f"condition not met in {timeout} s")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def storage(tmp_path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def demo_runs(ray_cluster, demo_data, tmp_path_factory) -> Path:
    """The demo pipeline (`make demo`'s spec) run once through the CLI on the session cluster;
    its runs (tokenizer … SFT, DPO, reward model) are the inputs of the RL and eval tests.
    While iterating on one module, ``FORGE_TEST_DEMO_RUNS=DIR`` reuses a finished one (a copy)."""
    storage = tmp_path_factory.mktemp("demo-runs")
    if os.environ.get("FORGE_TEST_DEMO_RUNS"):
        shutil.copytree(os.environ["FORGE_TEST_DEMO_RUNS"], storage, dirs_exist_ok=True)
        return storage
    limit = time_limits.FIXTURE_LIMITS["demo_runs"] - 60  # the CLI's own limit, inside the fixture's alarm
    env = {"FORGE_DEMO_DATA": str(demo_data), "RAY_ADDRESS": ray_cluster["gcs"]}
    try:
        result = forge("run", "jobs/configs/demo.yaml", "--storage", str(storage), env=env, timeout=limit)  # measured 1112 s and 1081 s on clean clones (17 stages)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(describe_pipeline_failure(storage, "demo", f"ran past its {limit} s limit", tail), pytrace=False)
    if result.returncode != 0:
        pytest.fail(describe_pipeline_failure(storage, "demo", f"exited with {result.returncode}", result.stderr),
                    pytrace=False)
    return storage


def pytest_configure(config):
    """Every fixture's budget, the ledger of limits and the headroom check (tests/suite_plugin.py),
    registered as a plugin of the whole session: hooks kept in this conftest would not see the
    session-scoped fixtures (pytest asks the session node's hooks for those, and this conftest
    only belongs to nodes under tests/)."""
    from tests import suite_plugin

    if not config.pluginmanager.is_registered(suite_plugin):
        config.pluginmanager.register(suite_plugin, "forge-suite-time-limits")
