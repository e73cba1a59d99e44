"""Form → spec: the submit form starts from the tiny example spec of the chosen kind
(``jobs/configs/tiny/<kind>.yaml``, the demo pipeline for ``pipeline``) and writes the
form's values into it, so the YAML the user sees, edits, validates and submits is a real,
complete spec — the form is a shortcut, never a second format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"
KINDS = ["tokenizer", "data", "pretrain", "sft", "dpo", "reward_model", "rl", "eval", "pipeline"]
INPUT_KEY = {"data": "tokenizer", "pretrain": "dataset", "sft": "base", "dpo": "base", "reward_model": "base",
             "rl": "policy", "eval": "models"}  # the spec key the lineage picker fills
DATA_KEY = {"tokenizer": "sources", "data": "sources", "sft": "data", "dpo": "data", "reward_model": "data",
            "rl": "prompts"}  # the spec list whose first path the data-path box fills
PRESETS = ["tiny", "tiny-moe", "125m", "1b", "8b", "moe-small", "moe-medium"]


def template(kind: str) -> dict:
    path = CONFIGS / "demo.yaml" if kind == "pipeline" else CONFIGS / "tiny" / f"{kind}.yaml"
    return yaml.safe_load(path.read_text())


def field_values(kind: str) -> dict[str, Any]:
    """What the form's fields show for a kind: the values its template puts in the YAML."""
    spec = template(kind)
    train, res = spec.get("train", {}), spec.get("resources", {})
    return {"name": spec.get("name", ""), "lr": spec.get("optim", {}).get("lr"),
            "max_steps": train.get("max_steps", spec.get("max_steps")), "micro_batch": train.get("micro_batch_size"),
            "workers": res.get("num_workers", 1), "cpus": res.get("cpus_per_worker", 1),
            "gpus": res.get("gpus_per_worker", 0)}


def _existing(spec: dict, key: str, choices: list[str]) -> None:
    """Point ``key`` at a run that exists when the template's default names one that does not."""
    if key in spec and isinstance(spec[key], str) and choices and spec[key] not in choices:
        spec[key] = choices[0]


def form_to_spec(kind: str, name: str, input_run: str | None, data_path: str, preset: str, lr: float | None,
                 max_steps: int | None, micro_batch: int | None, workers: int, cpus: float, gpus: float,
                 runs: dict[str, dict] | None = None, tokenizers: list[str] | None = None) -> dict[str, Any]:
    """The spec the form describes. ``runs`` (name → manifest) lets a pretrain picked on a
    data run inherit that data run's tokenizer; ``tokenizers`` (existing tokenizer runs, newest
    first) replace a template's tokenizer that this storage does not have."""
    spec = template(kind)
    _existing(spec, "tokenizer", tokenizers or [])
    if name:
        spec["name"] = name
    if kind == "pipeline":
        return spec
    key = INPUT_KEY.get(kind)
    if key and input_run:
        spec[key] = [input_run] if key == "models" else input_run
        if kind == "pretrain":
            spec.pop("data", None)  # a prepared dataset replaces raw sources
        if kind == "pretrain" and runs and input_run in runs:
            parents = [p for p in runs[input_run].get("parents", []) if runs.get(p, {}).get("kind") == "tokenizer"]
            if parents:
                spec["tokenizer"] = parents[0]
    if data_path:
        if kind in DATA_KEY:
            spec[DATA_KEY[kind]][0]["path"] = data_path
        elif kind == "eval":
            spec["tasks"][0]["path"] = data_path
    if kind == "pretrain" and preset:
        spec.setdefault("model", {})["preset"] = preset
    if lr and "optim" in spec:
        spec["optim"]["lr"] = float(lr)
    if max_steps:
        if "train" in spec:
            spec["train"]["max_steps"] = int(max_steps)
        elif kind == "rl":
            spec["max_steps"] = int(max_steps)
    if micro_batch and "train" in spec:
        spec["train"]["micro_batch_size"] = int(micro_batch)
    if "resources" in spec or kind in ("pretrain", "sft", "dpo", "reward_model", "rl"):
        spec["resources"] = {**spec.get("resources", {}), "num_workers": int(workers), "cpus_per_worker": float(cpus),
                             "gpus_per_worker": float(gpus)}
    return spec


def preflight_markdown(pre: dict, spec: dict | None = None) -> str:
    """The preflight for people: verdict, every error with its key, the estimates."""
    kind, name = pre.get("kind") or (spec or {}).get("kind"), pre.get("name") or (spec or {}).get("name")
    lines = [f"**{'valid' if pre['ok'] else 'invalid'}**: {kind} spec `{name}`"]
    for e in pre["errors"]:
        lines.append(f"- `{e['path'] or '<spec>'}`: {e['message']}" + (f" — {e['hint']}" if e.get("hint") else ""))
    for w in pre.get("warnings", []):
        lines.append(f"- note: {w}")
    for stage, est in (pre.get("estimates") or {}).items():
        if not est:
            continue
        memory = ", ".join(f"{z}: {gb:.2f} GB" for z, gb in est.get("memory_gb", {}).items())
        lines.append(f"- `{stage}`: {est['params']:,} parameters ({est['active_params']:,} active), "
                     f"{est['flops_per_token']:.3g} training FLOPs/token; memory per worker {memory} "
                     f"(a worker has {est.get('available_gb_per_worker', _available_gb()):.1f} GB); "
                     f"about {est.get('time_estimate_s', 0) / 60:.1f} min at 30% of this machine's peak")
    return "\n".join(lines)


def _available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30
