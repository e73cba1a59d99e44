"""The cluster recipes stay consistent: every KubeRay container runs with Ray token auth and
the shared runs volume at the same path, GPU workers ask for GPUs and shared memory, the
launcher YAMLs autoscale GPU workers that mount shared storage and start Ray with token auth."""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _containers(spec: dict):
    head = spec["headGroupSpec"]["template"]["spec"]
    yield "head", head["containers"][0], head
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        yield group["groupName"], pod["containers"][0], pod


def test_kuberay_manifests_keep_auth_and_shared_runs():
    raycluster = [d for d in yaml.safe_load_all((CLUSTER / "kuberay/raycluster.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in raycluster}
    assert set(kinds) == {"Secret", "PersistentVolumeClaim", "RayCluster"}
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    rayjob = yaml.safe_load((CLUSTER / "kuberay/rayjob.yaml").read_text())
    for spec in (kinds["RayCluster"]["spec"], rayjob["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"].startswith("2.60")
        for group, container, pod in _containers(spec):
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", group
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "forge-ray-token", group
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/mnt/forge_runs"] == "runs", group
            claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
            assert claims["runs"] == "forge-runs", group
            if group != "head":
                assert container["resources"]["limits"]["nvidia.com/gpu"] and "/dev/shm" in mounts, group
    assert "--storage /mnt/forge_runs" in rayjob["spec"]["entrypoint"]


def test_launchers_autoscale_gpu_workers_with_shared_storage_and_token_auth():
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml"):
        cfg = yaml.safe_load((CLUSTER / "launcher" / name).read_text())
        worker = cfg["available_node_types"]["gpu_worker"]
        assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
        assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}
        assert any("/mnt/forge_runs" in c and "mount" in c for c in cfg["setup_commands"])
        assert all("RAY_AUTH_MODE=token" in c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
                   if "ray start" in c)
        assert any("dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])  # reach it over SSH


def test_runtime_env_ships_code_not_environments():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv" in env["excludes"] and "forge_runs" in env["excludes"]
    assert env["env_vars"]["RAY_AUTH_MODE"] == "token"
