"""``forge serve RUN --replicas N``: the run's model behind Ray Serve's LLM serving (vLLM
replicas behind Ray's OpenAI-compatible router), on the Ray cluster the platform already runs,
with a fixed replica count or autoscaling between two bounds (``--replicas 1:4``).

Why Ray Serve and not N copies of the single server: Serve places the replicas on the cluster
(one placement-group bundle each, GPUs where asked), routes requests among them, restarts a
replica that dies and adds or removes replicas with the load, and one HTTP proxy per node
answers on the same URL. Each run is its own Serve application at ``/<run>``, so several runs
can be served side by side and stopped one by one.

Ray's router has no API keys; ``KeyedOpenAiIngress`` adds them: every endpoint of the router
first checks ``Authorization: Bearer <key>`` against a salted digest of the key (the key itself is
never stored in the cluster's config). Keys are required when the proxy listens on anything
but loopback, as for the single server.

    RAY_ADDRESS=127.0.0.1:6379 forge serve demo-sft --replicas 2        # http://127.0.0.1:8000/demo-sft/v1
    forge serve demo-sft --replicas 1:4 --gpus-per-replica 1 --address HEAD:6379 --api-key "$KEY"
    forge serve --stop demo-sft

It needs a running Ray cluster (``ray start --head`` or ``cluster/``): the replicas outlive
this command. The model directory must be readable from every node (the storage root is).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import typing

from ray.serve.llm.ingress import OpenAiIngress
from starlette.requests import Request

from forge_ray import serve_keys
from forge_ray.compat import ray_serve
from forge_ray.serve import LOOPBACK


def parse_replicas(text: str | int) -> tuple[int, int]:
    """``"2"`` → (2, 2) fixed; ``"1:4"`` → autoscale between 1 and 4 replicas."""
    lo, _, hi = str(text).partition(":")
    try:
        low, high = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"--replicas must be N or MIN:MAX (e.g. 2 or 1:4), got {text!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"--replicas needs 1 <= MIN <= MAX, got {text!r}")
    return low, high


def _with_key_check(name: str):
    """The router's endpoint ``name`` with the key check first. FastAPI builds each route from
    the method's signature, so the wrapper carries the original's (types resolved, plus the
    raw ``request`` where the original has none)."""
    original = getattr(OpenAiIngress, name)
    hints = typing.get_type_hints(original)
    sig = inspect.signature(original)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()]
    has_request = "request" in sig.parameters
    if not has_request:
        params.append(inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request))

    async def checked(self, *args, **kwargs):
        self._check_key(kwargs["request"] if has_request else kwargs.pop("request"))
        return await original(self, *args, **kwargs)

    checked.__name__, checked.__qualname__, checked.__doc__ = name, f"KeyedOpenAiIngress.{name}", original.__doc__
    checked.__signature__ = sig.replace(parameters=params,
                                        return_annotation=hints.get("return", sig.return_annotation))
    return checked


class KeyedOpenAiIngress(OpenAiIngress):
    """Ray's OpenAI router with an API key on every endpoint (when a key is set)."""

    def __init__(self, *args, api_key_digest: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._key_digest = api_key_digest

    def _check_key(self, request: Request) -> None:
        if self._key_digest is None:
            return
        from fastapi import HTTPException

        if not serve_keys.bearer_matches(request.headers.get("authorization"), self._key_digest):
            raise HTTPException(status_code=401, detail="invalid or missing API key (Authorization: Bearer KEY)")


for _name in ray_serve.router_endpoints(OpenAiIngress):
    setattr(KeyedOpenAiIngress, _name, _with_key_check(_name))


def app_name(run_name: str) -> str:
    return f"forge-{run_name}"


def start(run_name: str, model_dir: str, *, replicas: str | int = 1, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_model_len: int = 1024, cpus_per_replica: float = 1.0,
          gpus_per_replica: float = 0.0, address: str | None = None, wait_s: float = 600,
          show_progress: bool = True) -> dict:
    """Deploy ``model_dir`` as the Serve application ``forge-<run>`` at ``/<run>`` and wait
    until every replica is up. Returns the record ``forge serve --stop`` and the UI use."""
    low, high = parse_replicas(replicas)  # (``serve.start`` has refused a public host without a key)
    ray = _connect(address)
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    serve.start(http_options={"host": host, "port": port})
    # Serve keeps the proxy options it was first started with: read them back, so the URL is
    # the real one and a public proxy still needs a key
    http = ray_serve.http_options()
    if http.host not in LOOPBACK and not api_key:
        raise PermissionError(f"Serve on this cluster already listens on {http.host}:{http.port}; "
                              "an API key (--api-key) is required there")
    key_digest = serve_keys.digest(api_key) if api_key else None  # salted: the key never enters the cluster
    gpu = gpus_per_replica > 0
    bundle = {"CPU": cpus_per_replica, **({"GPU": gpus_per_replica} if gpu else {})}
    scaling = ({"num_replicas": low} if low == high else
               {"autoscaling_config": {"min_replicas": low, "initial_replicas": low, "max_replicas": high,
                                       "target_ongoing_requests": 8}})
    config = LLMConfig(
        model_loading_config={"model_id": run_name, "model_source": str(model_dir)},
        deployment_config={**scaling, "ray_actor_options": {"num_cpus": 0}},  # the bundle is the replica's cost
        engine_kwargs={"max_model_len": max_model_len, "dtype": "bfloat16" if gpu else "float32",
                       "enforce_eager": not gpu, "trust_remote_code": False},
        placement_group_config={"bundles": [bundle]},
        runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}},
    )
    app = build_openai_app({
        "llm_configs": [config],
        "ingress_cls_config": {"ingress_cls": KeyedOpenAiIngress, "ingress_extra_kwargs": {
            "api_key_digest": key_digest}},
        "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}},  # a router, not a model
    })
    serve.run_many([serve.RunTarget(app, name=app_name(run_name), route_prefix=f"/{run_name}")],
                   wait_for_applications_running=False)
    _wait_until_running(app_name(run_name), low, wait_s, show_progress)
    proxy_host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
    return {"run": run_name, "backend": "ray-serve", "app": app_name(run_name),
            "url": f"http://{proxy_host}:{http.port}/{run_name}/v1", "host": http.host, "port": http.port,
            "replicas": {"min": low, "max": high}, "address": ray.get_runtime_context().gcs_address,
            "resources_per_replica": bundle, "model": str(model_dir), "api_key": bool(api_key)}


def _wait_until_running(name: str, replicas: int, wait_s: float, show_progress: bool) -> None:
    """Wait for the application's model replicas, showing how many are up. A deployment that
    fails, or does not come up in ``wait_s`` (no room on the cluster), is removed again and
    the error says why, so nothing half-deployed holds the cluster's resources."""
    import ray
    from ray import serve
    from tqdm.auto import tqdm

    deadline = time.monotonic() + wait_s
    with tqdm(total=replicas, desc="replicas up", disable=not show_progress, leave=False) as bar:
        while True:
            app = serve.status().applications.get(name)
            status = getattr(app, "status", "NOT_STARTED")
            up = sum(d.replica_states.get("RUNNING", 0) for n, d in (app.deployments if app else {}).items()
                     if n.startswith("LLMServer"))
            bar.update(min(up, replicas) - bar.n)
            if status == "RUNNING":
                return
            failed = status in ("DEPLOY_FAILED", "UNHEALTHY")
            if failed or time.monotonic() > deadline:
                why = app.message if app and app.message else ""
                serve.delete(name)
                if failed:
                    raise RuntimeError(f"Ray Serve could not start {name}: {why[-2000:]}")
                raise TimeoutError(f"{up} of {replicas} replicas came up in {wait_s:.0f}s (the cluster has "
                                   f"{ray.available_resources()} free); removed {name} again. {why[-1000:]}")
            time.sleep(2)


def stop(info: dict) -> None:
    """Delete the run's Serve application (its replicas and route); Serve itself stays up."""
    _connect(info.get("address"))
    from ray import serve

    serve.delete(info["app"])


def replica_states(info: dict) -> dict[str, dict[str, int]]:
    """Replica counts by state for each deployment of the run's application (e.g. ``RUNNING: 2``)."""
    _connect(info.get("address"))
    from ray import serve

    app = serve.status().applications.get(info["app"])
    return {} if app is None else {name: dict(d.replica_states) for name, d in app.deployments.items()}


def _connect(address: str | None):
    """Connect to the cluster that hosts (or will host) the replicas; never start a Ray here,
    since replicas started by a Ray of this process would die with it."""
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    if address == "local":
        raise ValueError("--replicas serves on a running Ray cluster (RAY_ADDRESS=local starts a private one "
                         "that ends with this command); start one with `ray start --head` or cluster/")
    import ray

    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, namespace="forge-serve")
        except ConnectionError as exc:
            raise ValueError(f"--replicas serves on a running Ray cluster and none answers at {address!r} "
                             f"({exc}); start one with `ray start --head` or set RAY_ADDRESS / --address, "
                             "or drop --replicas for a single local vLLM server") from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not every deployment option on the console
    return ray
