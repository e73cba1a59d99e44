"""`forge submit` to a real Ray cluster's Jobs API (token auth on), then status/logs/stop."""

from __future__ import annotations

import json

import pytest

from tests.conftest import forge, read_json, wait_for

pytestmark = pytest.mark.slow




def test_submit_runs_the_spec_as_a_ray_job(ray_cluster, demo_data, tmp_path):
    storage = tmp_path / "runs"
    env = {"FORGE_DEMO_DATA": str(demo_data)}
    address = ray_cluster["dashboard"]
    result = forge("submit", "jobs/configs/tiny/tokenizer.yaml", "--storage", str(storage), "--address", address,
                   "--set", "name=submitted-tok", "--json", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    job = json.loads(result.stdout)
    assert job["job_id"].startswith("forge-submitted-tok-")
    queued = read_json(storage / "submitted-tok" / "manifest.json")
    assert queued["job_id"] == job["job_id"] and queued["status"] in ("queued", "running", "succeeded")

    def job_done():
        info = json.loads(forge("status", job["job_id"], "--address", address, "--json").stdout)
        return info if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    final = wait_for(job_done)
    logs = forge("logs", job["job_id"], "--address", address).stdout
    assert final["status"] == "SUCCEEDED", logs[-3000:]
    manifest = read_json(storage / "submitted-tok" / "manifest.json")
    assert manifest["status"] == "succeeded" and manifest["job_id"] == job["job_id"]
    assert manifest["metrics"]["heldout_bytes_per_token"] > 2.0
    assert "succeeded: run 'submitted-tok'" in logs
    # by run name: the run's job is found through its manifest
    by_run = forge("logs", "submitted-tok", "--storage", str(storage), "--address", address)
    assert "submitted-tok" in by_run.stdout


def test_stop_a_running_job(ray_cluster, tmp_path):
    from forge_ray import jobs_client

    client = jobs_client.connect(ray_cluster["dashboard"]).client
    job_id = client.submit_job(entrypoint="python -c 'import time; time.sleep(600)'")
    wait_for(lambda: str(client.get_job_status(job_id).value) == "RUNNING", timeout=120, every=1)  # measured 1.0 s on a clean clone
    result = forge("stop", job_id, "--address", ray_cluster["dashboard"], "--json")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: str(client.get_job_status(job_id).value) == "STOPPED", timeout=60, every=1)  # measured 2.0 s on a clean clone


def test_unreachable_cluster_is_a_clear_failure(tmp_path, demo_data):
    result = forge("submit", "jobs/configs/tiny/tokenizer.yaml", "--storage", str(tmp_path),
                   "--address", "http://127.0.0.1:9", env={"FORGE_DEMO_DATA": str(demo_data)}, timeout=120)
    assert result.returncode == 1 and "forge submit" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_jobs_api_refuses_requests_without_the_token(ray_cluster, tmp_path):
    """Ray 2.60's token authentication stays on: a bare HTTP request to the Jobs API is refused,
    the CLI (which sends the token from ~/.ray/auth_token or $RAY_AUTH_TOKEN) gets through."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{ray_cluster['dashboard']}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)
    answered = forge("status", "no-such-job", "--address", ray_cluster["dashboard"], "--storage", str(tmp_path))
    # past authentication, the cluster itself answers: that job does not exist
    assert "status code 404" in answered.stderr and "no-such-job does not exist" in answered.stderr, answered.stderr


def test_validate_asks_the_cluster_whether_the_workers_fit(ray_cluster, tmp_path):
    """`forge validate` against a running cluster finds what `forge run` would refuse there:
    workers no node can hold, and more workers than the cluster holds, each by its knob."""
    storage = str(tmp_path / "runs")
    args = ("validate", "jobs/configs/tiny/pretrain.yaml", "--no-inputs", "--storage", storage, "--json")
    for address in (ray_cluster["dashboard"], ray_cluster["gcs"]):
        big = json.loads(forge(*args, "--address", address, "--set", "resources.cpus_per_worker=1000").stdout)
        [error] = [e for e in big["errors"] if e["path"].startswith("resources")]
        assert error["path"] == "resources.cpus_per_worker" and "node 0: 2 CPU" in error["message"], big
    many = forge(*args, "--set", "resources.num_workers=4096", env={"RAY_ADDRESS": ray_cluster["dashboard"]})
    assert many.returncode == 2
    errors = json.loads(many.stdout)["errors"]
    assert [e["path"] for e in errors] == ["resources.num_workers"] and "holds 2" in errors[0]["message"], errors
    fits = forge(*args, "--address", ray_cluster["dashboard"])
    assert fits.returncode == 0, fits.stdout
