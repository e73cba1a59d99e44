"""``forge serve RUN``: put a trained (or imported) model behind an OpenAI-compatible API
(``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``) — vLLM's own server on this
machine, or with ``--replicas N`` (or ``MIN:MAX``) vLLM replicas on Ray Serve across the
cluster (``serve_cluster.py``); on 127.0.0.1 unless told otherwise, and with an API key
required for any other address. With a key, every route needs it (``serve_keys``), not only
``/v1``. ``forge serve --stop RUN`` ends either. The server's address, port and pid (never the
key, nor a digest of it) are kept under the storage root (``serve/<run>.json``) so ``--stop``
and the UI can find it.

    forge serve demo-sft                         # http://127.0.0.1:8000/v1, model name "demo-sft"
    forge serve demo-sft --host 0.0.0.0 --api-key "$KEY"
    forge serve demo-sft --replicas 1:4 --address HEAD:6379   # http://127.0.0.1:8000/demo-sft/v1
    forge serve --stop demo-sft
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from forge_ray import serve_keys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _serve_cluster():
    """The Ray Serve backend, imported on demand (it imports Ray, which reads the auth mode
    at import: token auth is switched on first when a token exists)."""
    from forge_ray.runner import use_token_auth_if_available

    use_token_auth_if_available()
    from forge_ray import serve_cluster

    return serve_cluster


def _record(storage, run_name: str):
    return storage.run("serve"), f"{storage.checked_name(run_name)}.json"


def start(storage, run_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_model_len: int = 1024, wait_s: float = 300, replicas: str | None = None,
          cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0, address: str | None = None) -> dict:
    """Start the server for ``run_name``'s model and wait until it answers; with ``replicas``
    on Ray Serve instead of as a local process."""
    if host not in LOOPBACK and not api_key:
        raise PermissionError(f"refusing to serve on {host} without an API key (--api-key); bind 127.0.0.1 "
                              "for local use")
    already = [i for i in running(storage) if i["run"] == run_name]
    if already:
        raise ValueError(f"{run_name!r} is already served at {already[0]['url']}; "
                         f"stop it first: forge serve --stop {run_name}")
    run = storage.run(run_name)
    outputs = run.manifest().get("outputs", {}) if run.exists() else {}
    if "model" not in outputs:
        raise ValueError(f"run {run_name!r} has no model output to serve")
    if not storage.is_local:
        raise ValueError("serving reads the model from local or mounted storage; export it first")
    model_dir = run.file(outputs["model"])
    config = json.loads(Path(model_dir, "config.json").read_text())
    max_model_len = min(max_model_len, int(config.get("max_position_embeddings") or max_model_len))
    rec_dir, rec = _record(storage, run_name)
    if replicas is not None:
        info = _serve_cluster().start(run_name, model_dir, replicas=replicas, host=host, port=port, api_key=api_key,
                                   max_model_len=max_model_len, cpus_per_replica=cpus_per_replica,
                                   gpus_per_replica=gpus_per_replica, address=address, wait_s=wait_s)
        rec_dir.write_text(rec, json.dumps(info, indent=2))
        return info
    import torch

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", run_name, "--host", host, "--port", str(port),
           "--max-model-len", str(max_model_len), "--dtype", "bfloat16" if torch.cuda.is_available() else "float32"]
    if not torch.cuda.is_available():
        cmd.append("--enforce-eager")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    env.pop("VLLM_API_KEY", None)  # vLLM's own check covers /v1 only; ours covers every route
    headers = {}
    if api_key:  # the server holds a salted digest; the key is neither in `ps` nor in its environment
        cmd += ["--middleware", f"{serve_keys.__name__}.RequireKeyOnEveryRoute"]
        env[serve_keys.DIGEST_ENV] = serve_keys.digest(api_key)
        headers["Authorization"] = f"Bearer {api_key}"
    log_path = Path(rec_dir.path) / f"{run_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    info = {"run": run_name, "url": f"{url}/v1", "pid": proc.pid, "host": host, "port": port, "log": str(log_path),
            "api_key": bool(api_key)}
    deadline = time.time() + wait_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited ({proc.returncode}); see {log_path}")
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/health", headers=headers), timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise TimeoutError(f"the vLLM server did not answer within {wait_s:.0f}s; see {log_path}") from None
            time.sleep(1)
    rec_dir.write_text(rec, json.dumps(info, indent=2))
    return info


def stop(storage, run_name: str) -> dict:
    rec_dir, rec = _record(storage, run_name)
    if not rec_dir.exists(rec):
        raise FileNotFoundError(f"no server recorded for {run_name!r}")
    info = json.loads(rec_dir.read_text(rec))
    if info.get("backend") == "ray-serve":
        _serve_cluster().stop(info)
    else:
        try:
            os.killpg(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    rec_dir.write_text(rec, json.dumps({**info, "stopped": True}, indent=2))
    return {**info, "stopped": True}


def running(storage) -> list[dict]:
    """Servers started with ``forge serve`` that are still up (their process exists)."""
    rec_dir = storage.run("serve")
    if not storage.is_local or not Path(rec_dir.path).is_dir():
        return []
    out = []
    for rec in sorted(Path(rec_dir.path).glob("*.json")):
        info = json.loads(rec.read_text())
        if info.get("stopped"):
            continue
        if info.get("backend") == "ray-serve":
            if _answers(info["url"]):
                out.append(info)
            continue
        try:
            os.kill(info["pid"], 0)
        except (ProcessLookupError, PermissionError):
            continue
        out.append(info)
    return out


def _answers(url: str) -> bool:
    """Whether an endpoint answers at all (an HTTP error such as 401 counts as up)."""
    try:
        urllib.request.urlopen(url + "/models", timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True
