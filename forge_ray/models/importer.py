"""``forge import PATH --name NAME``: bring a model the organisation already has (a local
Hugging Face directory) in as a run, so lineage starts there and every stage that takes a
model or a tokenizer can name it (``init_from: NAME`` continues pre-training from it,
``base: NAME`` fine-tunes it, evals compare against it).

Safe by construction: safetensors weights only (a pickle checkpoint is refused, never
opened), no ``auto_map``/remote code, and only the architectures of
:data:`forge_ray.models.families.FAMILIES` (transformers' own implementations). The weights are copied into the run (``model/``)
and fingerprinted, so the run does not change if the source directory does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from forge_ray.allowed_paths import require_allowed
from forge_ray.models.families import BY_ARCHITECTURE as SUPPORTED

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class ImportRefused(ValueError):
    """The directory is not a model we can import safely (the message says why)."""


def inspect(path: str | Path) -> dict:
    """Check a model directory without loading its weights; returns what the manifest records."""
    from safetensors import safe_open

    from forge_ray.train.checkpoint import sha256_file

    src = Path(path)
    if not (src / "config.json").is_file():
        raise ImportRefused(f"{src}: no config.json — give a Hugging Face model directory")
    weights = sorted(src.glob("*.safetensors"))
    pickles = sorted(p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not weights:
        raise ImportRefused(f"{src}: no *.safetensors weights" + (
            f" (found {', '.join(pickles)}: pickle files are never loaded; convert them to safetensors "
            "in a sandbox you trust)" if pickles else ""))
    config = json.loads((src / "config.json").read_text())
    if config.get("auto_map"):
        raise ImportRefused(f"{src}/config.json: auto_map asks for remote code; forge-ray never runs it")
    archs = config.get("architectures") or []
    if not archs or archs[0] not in SUPPORTED:
        raise ImportRefused(f"{src}/config.json: architecture {archs[0] if archs else None!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED)})")
    if not (src / "tokenizer.json").is_file() and not (src / "tokenizer.model").is_file():
        raise ImportRefused(f"{src}: no tokenizer (tokenizer.json) next to the weights")
    params, fingerprints = 0, {}
    for w in weights:
        with safe_open(str(w), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                params += n
        fingerprints[w.name] = sha256_file(w)
    return {"architecture": archs[0], "family": SUPPORTED[archs[0]].name, "params": params,
            "weight_sha256": fingerprints, "vocab_size": config.get("vocab_size"),
            "hidden_size": config.get("hidden_size"), "num_layers": config.get("num_hidden_layers")}


def import_model(path: str | Path, name: str, storage) -> dict:
    """Register ``path`` as run ``name`` (kind ``import``): ``model/`` (weights, config,
    tokenizer), a manifest with fingerprints, parameter count and architecture."""
    from transformers import AutoConfig

    require_allowed(str(path), "imported model directory")
    src = Path(path).resolve()
    info = inspect(src)
    AutoConfig.from_pretrained(src, trust_remote_code=False)  # a config transformers understands
    run = storage.run(name)
    keep = [p for p in src.iterdir() if p.is_file() and p.suffix not in PICKLE_SUFFIXES]
    run.create_or_resume("import", json.dumps({"kind": "import", "name": name, "path": str(src)}), [],
                         fingerprints={k: v[:16] for k, v in info["weight_sha256"].items()})
    with run.local_dir("model") as out:
        for p in keep:
            shutil.copy2(p, out / p.name)
    run.update(source=str(src), **{k: v for k, v in info.items() if k != "weight_sha256"},
               weight_sha256=info["weight_sha256"])
    return run.succeed({"params": info["params"]}, {"model": "model", "tokenizer": "model"})
