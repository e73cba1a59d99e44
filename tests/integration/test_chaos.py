"""Faults and load on a multi-node Ray cluster on loopback (``cluster/local.sh up 3``: a head
with no CPUs and three 1-CPU worker raylets), every node writing to one shared storage root
given as a ``file://`` URI: a node lost mid-pretraining, a driver killed and its run
resubmitted, a storage volume that fills up, and 20 concurrent submissions.

The three training runs share one spec (only the name differs), so on CPU with fixed seeds
their loss curves must be identical whatever happened to them: that is how each test knows
the recovery resumed the right state rather than merely finishing."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from forge_ray import api, jobs_client
from forge_ray.train.checkpoint import latest, verify
from tests.conftest import REPO, VENV_BIN, _free_port, forge, read_json, wait_for
from tests.time_limits import limited

pytestmark = pytest.mark.slow
LOCAL_SH = str(REPO / "cluster" / "local.sh")
CHECKPOINT_EVERY = 8




@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    port, dashboard = _free_port(), _free_port()
    env = {**os.environ, "FORGE_LOCAL_PORT": str(port), "FORGE_LOCAL_DASHBOARD": str(dashboard),
           "FORGE_LOCAL_STATE": str(tmp_path_factory.mktemp("local-cluster")), "RAY": str(VENV_BIN / "ray")}
    with limited(300) as limit_s:  # measured 14 s on a clean clone
        up = subprocess.run(["bash", LOCAL_SH, "up", "3", "--cpus", "1", "--drivers", "2"], env=env,
                            capture_output=True, text=True, timeout=limit_s)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = subprocess.run(["bash", LOCAL_SH, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count(" 1 node_") == 4, status.stdout  # head + 3 workers registered
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}", "env": env,
               "session": Path(env["FORGE_LOCAL_STATE"], "session").read_text().strip()}
    finally:
        subprocess.run(["bash", LOCAL_SH, "down"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def shared(demo_runs, tmp_path_factory) -> Path:
    """The storage every node sees, holding the demo's tokenizer and prepared corpus."""
    root = tmp_path_factory.mktemp("shared-storage")
    for run in ("demo-tokenizer", "demo-corpus"):
        shutil.copytree(demo_runs / run, root / run)
    return root


def spec_file(tmp: Path, name: str) -> str:
    spec = {"kind": "pretrain", "name": name, "tokenizer": "demo-tokenizer", "dataset": "demo-corpus", "seed": 5,
            "model": {"preset": "tiny"}, "optim": {"lr": 3e-3, "warmup_steps": 4},
            "train": {"max_steps": 32, "micro_batch_size": 4, "seq_len": 128, "eval_every": 16, "eval_batches": 2,
                      "checkpoint_every": CHECKPOINT_EVERY, "keep_checkpoints": 2, "max_failures": 2},
            "resources": {"num_workers": 2}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def curve(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out


def _checkpointed_past(run_dir: Path, step: int):
    """True once rank 0 logged ``step`` and a whole checkpoint is on disk."""
    try:
        return max(steps(run_dir)) >= step and latest(run_dir / "train") is not None
    except (OSError, ValueError):
        return False


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out.append((int(d.name), ppid, cmd))
    return out


def _node_running_a_train_worker(session: str) -> int:
    """Index of a worker node (nodeI resource) of this cluster that hosts a Ray Train worker."""
    procs = _processes()
    by_pid = {pid: cmd for pid, _, cmd in procs}
    for _pid, ppid, cmd in procs:
        parent = by_pid.get(ppid, "")
        if cmd.startswith("ray::RayTrainWorker") and "raylet" in parent and session in parent:
            return int(re.search(r"[=,]node(\d+),", parent).group(1))
    raise AssertionError("no Ray Train worker found on the loopback cluster's nodes")


@pytest.fixture(scope="module")
def node_lost(cluster, shared, tmp_path_factory):
    """A 2-worker pretraining run on the loopback nodes, one of whose nodes is killed (its
    raylet, with every process on it) after the first checkpoint — while rank 0 holds still
    after step 10 (a planned ``hold_s`` fault), so the kill lands mid-run however fast the
    machine (the whole run is a few seconds of training: an unheld run could finish first)."""
    tmp = tmp_path_factory.mktemp("node-lost")
    holding = tmp / "holding"
    fault = {"at": "train_step", "step": CHECKPOINT_EVERY + 2, "rank": 0, "marker": str(holding), "hold_s": 300}
    proc = subprocess.Popen([str(VENV_BIN / "forge"), "run", spec_file(tmp, "node-lost"), "--storage", f"file://{shared}"],
                            cwd=REPO, env={**cluster["env"], "RAY_ADDRESS": cluster["gcs"],
                                           "FORGE_FAULT_INJECT": json.dumps(fault)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: holding.exists() and _checkpointed_past(shared / "node-lost", CHECKPOINT_EVERY),
                 timeout=600, every=0.5)  # measured 17 s on a clean clone
        node = _node_running_a_train_worker(cluster["session"])
        killed = subprocess.run(["bash", LOCAL_SH, "kill", str(node)], env=cluster["env"], capture_output=True, text=True)
        assert killed.returncode == 0, killed.stderr
        with limited(900) as limit_s:  # measured 25 s on a clean clone; the restart on the other nodes and the rest of the run
            out, _ = proc.communicate(timeout=limit_s)
    finally:
        proc.kill()
    return {"returncode": proc.returncode, "output": out, "node": node, "dir": shared / "node-lost"}


def test_a_lost_node_mid_pretraining_restarts_on_the_others_from_the_checkpoint(node_lost):
    assert node_lost["returncode"] == 0, node_lost["output"][-3000:]
    run = node_lost["dir"]
    manifest = read_json(run / "manifest.json")
    assert manifest["status"] == "succeeded" and manifest["metrics"]["step"] == 32
    restarts = re.findall(r"worker group of 2 resumed at step (\d+)", (run / "run.log").read_text())
    assert len(restarts) == 1, "the worker group was not restarted exactly once"
    resumed_at = int(restarts[0])
    assert resumed_at >= CHECKPOINT_EVERY and resumed_at % CHECKPOINT_EVERY == 0  # from a checkpoint, not step 0
    logged = steps(run)
    assert logged.count(0) == 1 and set(logged) == set(range(33))  # nothing started over, nothing skipped
    c = curve(run)
    assert c[32] < c[1] - 1.0  # and it learned


def test_a_killed_driver_resubmitted_resumes_its_run(cluster, shared, node_lost, tmp_path):
    spec = spec_file(tmp_path, "driver-lost")
    submit_env = {**cluster["env"], "FORGE_DRIVER_RESOURCES": '{"forge_driver": 1}'}
    args = ("submit", spec, "--storage", f"file://{shared}", "--address", cluster["dashboard"], "--json")
    first = forge(*args, env=submit_env)
    assert first.returncode == 0, first.stderr[-2000:]
    job = json.loads(first.stdout)["job_id"]
    wait_for(lambda: _checkpointed_past(shared / "driver-lost", CHECKPOINT_EVERY + 2), timeout=600, every=0.5)  # measured 18 s on a clean clone
    drivers = [pid for pid, _, cmd in _processes()
               if cmd.startswith("python -m forge_ray.cli run --spec-json") and '"name":"driver-lost"' in cmd]
    assert len(drivers) == 1, drivers
    os.kill(drivers[0], signal.SIGKILL)
    client = jobs_client.connect(cluster["dashboard"]).client
    wait_for(lambda: str(client.get_job_status(job).value) == "FAILED", timeout=120)  # measured 2.0 s on a clean clone

    second = forge(*args, env=submit_env)  # the same spec again: the same run, resumed
    assert second.returncode == 0, second.stderr[-2000:]
    job2 = json.loads(second.stdout)["job_id"]
    final = wait_for(lambda: (s := str(client.get_job_status(job2).value)) in ("SUCCEEDED", "FAILED") and s, timeout=900)  # measured 28 s on a clean clone
    assert final == "SUCCEEDED", client.get_job_logs(job2)[-3000:]
    run = shared / "driver-lost"
    manifest = read_json(run / "manifest.json")
    assert manifest["status"] == "succeeded" and manifest["attempts"] == 2 and manifest["job_id"] == job2
    assert "resuming driver-lost from" in (run / "run.log").read_text()
    assert curve(run) == curve(node_lost["dir"])  # the same run as if nothing had happened


@pytest.fixture
def small_volume(tmp_path):
    """A tmpfs of a chosen size (needs root, as in CI's container); unmounted afterwards."""
    mount = tmp_path / "volume"
    mount.mkdir()

    def resize(megabytes: int) -> Path:
        opts = f"size={megabytes}m" + (",remount" if os.path.ismount(mount) else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        return mount

    yield resize
    if os.path.ismount(mount):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def test_a_full_disk_fails_clearly_and_the_rerun_resumes_from_the_last_whole_checkpoint(
        cluster, shared, node_lost, small_volume, tmp_path):
    checkpoint_mb = _size_mb(latest(node_lost["dir"] / "train"))
    inputs_mb = _size_mb(shared / "demo-tokenizer") + _size_mb(shared / "demo-corpus")
    volume = small_volume(int(inputs_mb + 1.5 * checkpoint_mb + 2))  # room for one checkpoint, not two
    for run in ("demo-tokenizer", "demo-corpus"):
        shutil.copytree(shared / run, volume / run)
    spec = spec_file(tmp_path, "disk-full")
    env = {"RAY_ADDRESS": cluster["gcs"]}

    failed = forge("run", spec, "--storage", str(volume), env={**cluster["env"], **env}, timeout=900)  # measured 20 s on a clean clone
    tail = failed.stdout[-1500:] + failed.stderr[-3000:]
    assert failed.returncode == 1, tail
    assert "forge run failed (disk_full)" in failed.stderr and "No space left on device" in failed.stderr, tail
    run = volume / "disk-full"
    manifest = read_json(run / "manifest.json")  # the failure is recorded although the disk is full
    assert manifest["status"] == "failed" and manifest["error"]["kind"] == "disk_full", manifest
    assert str(run) in manifest["error"]["message"] and "--storage" in manifest["error"]["hint"]
    whole = latest(run / "train")  # where the disk filled decides which checkpoint was the last whole one
    assert whole is not None, list((run / "train").iterdir())
    whole_step = verify(whole)
    assert whole_step % CHECKPOINT_EVERY == 0 and whole_step < 32
    for other in (run / "train").glob("checkpoint_2*"):  # nothing newer is whole: never a resume candidate
        try:
            assert verify(other) <= whole_step
        except ValueError:
            pass  # cut short by the full disk, and refused

    small_volume(int(inputs_mb + 4 * checkpoint_mb + 8))  # space freed: the same command again
    resumed = forge("run", spec, "--storage", str(volume), env={**cluster["env"], **env}, timeout=900)  # measured 36 s on a clean clone
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_json(run / "manifest.json")["attempts"] == 2
    assert f"resuming disk-full from {whole}" in (run / "run.log").read_text()
    assert set(steps(run)) == set(range(33)) and curve(run) == curve(node_lost["dir"])


def test_twenty_concurrent_submissions_queue_on_driver_slots_and_all_finish(cluster, demo_data, tmp_path):
    storage = f"file://{tmp_path / 'runs'}"

    def submit(i: int):
        spec = {"kind": "tokenizer", "name": f"load-{i:02d}", "vocab_size": 300,
                "sources": [{"path": str(demo_data / "docs")}]}
        return api.submit(spec, storage=storage, address=cluster["dashboard"], driver_resources={"forge_driver": 1})

    with cf.ThreadPoolExecutor(20) as pool:
        jobs = [j.job_id for j in pool.map(submit, range(20))]
    assert len(set(jobs)) == 20
    client = jobs_client.connect(cluster["dashboard"]).client
    most_running, ever_pending = 0, False

    def all_done():
        nonlocal most_running, ever_pending
        states = [str(client.get_job_status(j).value) for j in jobs]
        most_running = max(most_running, states.count("RUNNING"))
        ever_pending |= "PENDING" in states
        return all(s in ("SUCCEEDED", "FAILED", "STOPPED") for s in states) and states

    states = wait_for(all_done, timeout=900, every=1.0)  # measured 87 s on a clean clone
    assert states.count("SUCCEEDED") == 20, [client.get_job_logs(j)[-500:] for j, s in zip(jobs, states)
                                             if s != "SUCCEEDED"]
    assert ever_pending and most_running <= 2  # two driver slots on the head: the rest waited their turn
    from forge_ray.runs import Storage

    runs = {m["name"]: m for m in Storage(storage).list_runs()}  # none lost, none run twice
    assert sorted(runs) == [f"load-{i:02d}" for i in range(20)]
    assert all(m["status"] == "succeeded" and m["attempts"] == 1 and m["job_id"] in jobs for m in runs.values())
