"""Preflight: everything `forge run` would refuse, found before anything starts — the spec's
types, its input runs (missing, unfinished, of the wrong kind), its source paths, whether the
model fits a worker and whether the cluster can place the workers — all in one report. The
public entry points are re-exported by :mod:`forge_ray.api`."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from forge_ray.runs import Storage
from forge_ray.spec import SpecError, StageSpec, build_spec, load_spec, read_raw, spec_to_dict
from forge_ray.spec.typed import Problem

SpecLike = str | Path | dict | StageSpec

@dataclass
class Preflight:
    """What a spec would do and whether it can: all problems at once, before anything runs."""

    ok: bool
    kind: str | None = None
    name: str | None = None
    errors: list[dict] = field(default_factory=list)  # {path, message, hint}
    warnings: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    runnable: bool = True
    estimates: dict[str, dict] = field(default_factory=dict)  # stage name → params, FLOPs, memory per worker

    def to_json(self) -> dict:
        return asdict(self)


def resolve(spec: SpecLike, overrides: list[str] | None = None) -> StageSpec:
    """A typed spec from a path, a mapping or a spec; raises SpecError with every problem."""
    if isinstance(spec, StageSpec):
        spec = spec_to_dict(spec)
    if isinstance(spec, dict):
        from forge_ray.spec import apply_overrides

        return build_spec(apply_overrides(spec, overrides or []), "<dict>")
    return load_spec(spec, overrides)


def validate(spec: SpecLike, overrides: list[str] | None = None, storage: str | None = None,
             check_inputs: bool = True, address: str | None = None) -> Preflight:
    """Type-check the spec and (optionally) that its input runs exist and succeeded, and — with
    a cluster to ask (``address``, ``$RAY_ADDRESS`` or a connected Ray) — that its workers fit."""
    from forge_ray.runner import RUNNERS, input_problems, source_problems
    from forge_ray.spec import PipelineStage

    try:
        typed = resolve(spec, overrides)
    except SpecError as exc:
        raw = spec if isinstance(spec, dict) else {}
        if isinstance(spec, (str, Path)):
            with contextlib.suppress(Exception):
                raw = read_raw(spec)
        found = exc.problems + (_raw_input_problems(raw, Storage(storage)) if check_inputs else [])
        return Preflight(ok=False, kind=raw.get("kind") if isinstance(raw.get("kind"), str) else None,
                         name=raw.get("name") if isinstance(raw.get("name"), str) else None,
                         errors=[asdict(p) for p in found])
    problems: list[Problem] = []
    store = Storage(storage)
    stages = typed.stages if isinstance(typed, PipelineStage) else [typed]
    if typed.kind == "sweep":  # a sweep runs its base spec: its inputs must be there too
        stages = [typed, build_spec({**typed.base, "name": typed.base.get("name") or f"{typed.name}-trial"})]
    made: dict[str, str] = {}  # the pipeline's earlier stages: name → kind
    preflight_estimates: dict[str, dict] = {}
    for i, stage in enumerate(stages):
        prefix = ("base." if i else "") if typed.kind == "sweep" else f"stages[{i}]." if stage is not typed else ""
        if check_inputs:
            found = input_problems(stage, store, made) + source_problems(stage)
            problems += [Problem(prefix + p.path, p.message, p.hint) for p in found]
        if getattr(stage, "resources", None) is not None:  # a cluster's room, not an input: always asked
            problems += [Problem(prefix + p.path, p.message, p.hint) for p in _placement_problems(stage, address)]
        if stage.kind == "pretrain":
            est, problem = _size_check(stage, store)
            preflight_estimates[stage.name] = est
            if problem:
                problems.append(Problem(prefix + problem.path, problem.message, problem.hint))
        if stage.kind not in RUNNERS:
            problems.append(Problem(prefix + "kind", f"kind {stage.kind!r} cannot run in this version yet",
                                    f"runnable kinds: {', '.join(RUNNERS)}"))
        made[stage.name] = stage.kind
    warnings = []
    if store.exists(typed.name):
        from forge_ray.spec import spec_to_yaml

        same = store.run(typed.name).spec_matches(spec_to_yaml(typed))
        if typed.kind == "pipeline" and not same:
            warnings.append(f"pipeline {typed.name!r} exists with another spec: it will be updated (old spec kept)")
        elif same:
            warnings.append(f"run {typed.name!r} exists with this spec: running it resumes (or does nothing)")
        elif store.run(typed.name).failed_before_producing():
            warnings.append(f"run {typed.name!r} failed before it produced anything: this spec replaces its spec "
                            "(the old one is kept as spec.N.yaml)")
        else:
            problems.append(Problem("name", f"run {typed.name!r} already exists with a different spec",
                                    "choose another name or delete the run directory"))
    return Preflight(ok=not problems, kind=typed.kind, name=typed.name, errors=[asdict(p) for p in problems],
                     warnings=warnings, inputs=typed.input_runs(), runnable=typed.kind in RUNNERS,
                     estimates=preflight_estimates)


def _raw_input_problems(raw: dict, store: Storage) -> list[Problem]:
    """For a spec that does not type-check: its input runs and local source paths, checked from
    the raw mapping, so one report holds every problem instead of one phase at a time."""
    from forge_ray.spec.stages import STAGES

    cls = STAGES.get(raw.get("kind")) if isinstance(raw.get("kind"), str) else None
    problems = []
    for field_name in getattr(cls, "INPUTS", ()):
        ref = raw.get(field_name)
        if isinstance(ref, str) and ref and not os.path.isdir(ref) and not store.exists(ref):
            problems.append(Problem(field_name, f"names run {ref!r}, which does not exist in {store.uri}",
                                    "run that stage first, or chain both in a pipeline spec"))
    for key in ("sources", "data", "prompts"):
        for i, src in enumerate(raw.get(key) if isinstance(raw.get(key), list) else []):
            path = src.get("path") if isinstance(src, dict) else None
            if isinstance(path, str) and "://" not in path and "${" not in path and not any(c in path for c in "*?[") \
                    and not os.path.exists(path):
                problems.append(Problem(f"{key}[{i}].path", f"{path!r} does not exist", "check the path"))
    return problems


def _placement_problems(stage, address: str | None = None) -> list[Problem]:
    """Workers no node of the cluster can hold (and RL roles that ask for more CPUs than the
    whole cluster has), when there is a cluster to ask: the connected
    Ray, or the one at ``address`` / ``$RAY_ADDRESS`` (read through its state API, no driver
    started). Without one, placement is checked when the run starts."""
    from forge_ray.train.preflight import cluster_nodes, resource_problems

    nodes = cluster_nodes(address)
    if not nodes:
        return []
    problems = resource_problems(stage.resources, nodes)
    if stage.kind == "rl" and stage.engine != "openrlhf":  # every role's CPUs, not the policy's alone
        from forge_ray.rl.placement import room_problems

        problems += room_problems(stage, nodes)
    return problems


def _size_check(stage, store: Storage) -> tuple[dict, Problem | None]:
    """Parameters, FLOPs and memory per worker of a pre-training spec, and whether it fits.
    The vocabulary comes from the tokenizer run when it exists (else 32k is assumed)."""
    from forge_ray.models import registry
    from forge_ray.train.preflight import check_fits

    vocab = 32000
    if store.exists(stage.tokenizer):
        tok_json = Path(store.run(stage.tokenizer).path) / "tokenizer" / "tokenizer.json"
        if tok_json.exists():
            vocab = len(json.loads(tok_json.read_text())["model"]["vocab"]) + 16
    try:
        arch = registry.resolve(stage.model)
    except KeyError as exc:
        return {}, Problem("model.preset", str(exc).strip("'\""))
    est = registry.estimate(arch, vocab, stage.train.seq_len, stage.train.micro_batch_size,
                            stage.resources.num_workers, stage.train.activation_checkpointing)
    out = {**est.to_json(), **_capacity(est, stage)}
    try:
        check_fits(est, stage)
    except SpecError as exc:
        return out, exc.problems[0]
    return out, None


def _capacity(est, stage) -> dict:
    """Memory a worker has, and a rough wall time: the run's training FLOPs over this machine's
    measured matmul peak per worker at an assumed 30% utilisation (what the tiny CPU runs reach)."""
    import torch

    from forge_ray.train.metrics import measured_peak_flops
    from forge_ray.train.preflight import available_gb_per_worker

    t, res = stage.train, stage.resources
    gpu = res.gpus_per_worker > 0 and torch.cuda.is_available()
    peak = measured_peak_flops(torch.bfloat16 if gpu else torch.float32, "cuda" if gpu else "cpu", size=512)
    tokens = t.max_steps * t.micro_batch_size * t.grad_accum * t.seq_len * res.num_workers
    return {"available_gb_per_worker": available_gb_per_worker(res.gpus_per_worker, res.num_workers,
                                                               res.memory_per_worker_gb),
            "time_estimate_s": tokens * est.flops_per_token / (0.3 * peak * res.num_workers),
            "assumed_mfu": 0.3, "measured_peak_flops_per_worker": peak}
