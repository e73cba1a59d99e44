"""Refuse a training spec that cannot fit before any worker starts, and say which knob to turn."""

from __future__ import annotations

from forge_ray.models.registry import Estimate
from forge_ray.spec import SpecError
from forge_ray.spec.typed import Problem


def available_gb_per_worker(gpus_per_worker: float, num_workers: int, memory_per_worker_gb: float | None) -> float:
    """GPU memory per worker on GPU specs; else the reserved memory, else host RAM / workers."""
    if gpus_per_worker > 0:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024**3 * min(gpus_per_worker, 1.0)
    if memory_per_worker_gb:
        return memory_per_worker_gb
    import os

    import psutil

    # workers beyond this machine's cores run on other nodes: they do not share its memory
    return psutil.virtual_memory().total / 1024**3 / max(min(num_workers, os.cpu_count() or 1), 1)


def resource_problems(resources, nodes: list[dict[str, float]]) -> list[Problem]:
    """Whether ``resources.num_workers`` workers of the asked size can be placed on ``nodes``
    (each alive node's total resources, as Ray reports them). Without this check Ray Train
    retries starting the worker group for ever; with it the run stops at once naming the knob
    and what the cluster has."""
    ask = {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker,
           "memory": (resources.memory_per_worker_gb or 0) * 1024**3}
    ask = {k: v for k, v in ask.items() if v}
    have = ", ".join(f"node {i}: {n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU, "
                     f"{n.get('memory', 0) / 1024**3:.0f} GB" for i, n in enumerate(nodes)) or "no alive nodes"
    per_node = [min(int(n.get(k, 0) // v) for k, v in ask.items()) for n in nodes]
    if not any(per_node):
        key = next(k for k, v in ask.items() if not any(n.get(k, 0) >= v for n in nodes))
        field = {"CPU": "cpus_per_worker", "GPU": "gpus_per_worker", "memory": "memory_per_worker_gb"}[key]
        return [Problem(f"resources.{field}", f"no node can hold one worker asking for {ask[key]:g} {key} "
                                              f"(the cluster has {have})", f"lower resources.{field}, or add a "
                                              "node that large")]
    if sum(per_node) < resources.num_workers:
        return [Problem("resources.num_workers", f"{resources.num_workers} workers of {ask} do not fit: the cluster "
                                                 f"holds {sum(per_node)} ({have})",
                        f"resources.num_workers<={sum(per_node)}, smaller workers, or more nodes")]
    return []


def _answers(address: str, timeout_s: float = 2.0) -> bool:
    """Whether anything listens at a Ray address (``host:port`` or ``http://host:port``): an
    unreachable cluster is not worth the state API's connection retries in a preflight."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout_s):
            return True
    except (OSError, ValueError, TypeError):
        return False


def cluster_nodes(address: str | None = None) -> list[dict[str, float]] | None:
    """The total resources of each alive node: of the cluster at ``address`` if one is named
    (through Ray's state API), else of the connected Ray, else of ``$RAY_ADDRESS``'s; None when
    there is none to ask."""
    import os
    import sys

    if not address and "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "local" or not _answers(address):
        return None
    from forge_ray.runner import use_token_auth_if_available

    use_token_auth_if_available()
    try:
        from ray.util.state import list_nodes

        nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], timeout=15, detail=True,
                           raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - an unreachable cluster is reported when the run starts
        return None
    return [dict(n.resources_total) for n in nodes]


def check_fits(est: Estimate, spec) -> None:
    train, res = spec.train, spec.resources
    need = est.memory_gb[f"zero{train.zero_stage}"]
    have = available_gb_per_worker(res.gpus_per_worker, res.num_workers, res.memory_per_worker_gb)
    if need <= have:
        return
    better = [f"train.zero_stage={s}" for s in range(train.zero_stage + 1, 4) if est.memory_gb[f"zero{s}"] <= have]
    states_gb = 16 * est.params / 1024**3
    if not better and have > est.activation_gb:
        workers = int(states_gb / (have - est.activation_gb)) + 1
        better = [f"train.zero_stage=3 with resources.num_workers>={workers}"]
    hints = better[:1] + ["more resources.num_workers" if train.zero_stage else "",
                          "train.activation_checkpointing=true" if not train.activation_checkpointing else "",
                          "a smaller train.micro_batch_size"]
    raise SpecError([Problem(
        "model", f"needs about {need:.1f} GB per worker at ZeRO stage {train.zero_stage} "
                 f"({est.params / 1e6:.1f}M parameters, {est.activation_gb:.1f} GB activations) "
                 f"but a worker has {have:.1f} GB",
        "try " + ", or ".join(h for h in hints if h))])


def require_placement(resources) -> None:
    """Raise :class:`SpecError` (exit 2) when the connected cluster cannot place the workers —
    called by each stage right after connecting, before Ray would retry placing them for ever."""
    if problems := resource_problems(resources, cluster_nodes() or []):
        raise SpecError(problems)
