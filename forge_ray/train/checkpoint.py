"""Training checkpoints: DeepSpeed engine state + data position + RNG, with an integrity record.

A checkpoint directory holds DeepSpeed's files (each rank writes its own shards), one
``forge_rank{r}.json`` per rank (step, data-stream state, RNG states) and, from rank 0,
``forge_checkpoint.json`` listing every file with its SHA-256. Before DeepSpeed loads
anything (it uses ``torch.load``, i.e. pickle), every file's hash is checked against that
record: a checkpoint is only loaded if it is byte-for-byte what this run wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

TAG = "engine"
RECORD = "forge_checkpoint.json"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": base64.b64encode(json.dumps(random.getstate()).encode()).decode(),
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def set_rng_state(state: dict) -> None:
    py = json.loads(base64.b64decode(state["python"]))
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))


def save(engine, directory: Path, rank: int, step: int, stream_state: dict, extra: dict | None = None) -> None:
    """Every rank calls this with the same ``directory`` layout (its local copy)."""
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=TAG)
    state = {"step": step, "stream": stream_state, "rng": rng_state(), **(extra or {})}
    (directory / f"forge_rank{rank}.json").write_text(json.dumps(state))
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != RECORD)
    record_name = RECORD if rank == 0 else f"forge_files_rank{rank}.json"
    (directory / record_name).write_text(json.dumps(
        {"step": step, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}, indent=1))


def seal(directory: Path, step: int) -> None:
    """Write the integrity record over every file already in ``directory`` (for checkpoints
    assembled by several actors, e.g. RL's policy and critic)."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != RECORD)
    (directory / RECORD).write_text(json.dumps(
        {"step": step, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}, indent=1))


def verify(directory: Path) -> int:
    """Check every recorded file's hash; returns the step. Raises on any mismatch."""
    directory = Path(directory)
    records = [directory / RECORD, *sorted(directory.glob("forge_files_rank*.json"))]
    if not records[0].exists():
        raise ValueError(f"{directory}: no {RECORD}; not a forge checkpoint, refusing to load it")
    step = None
    for rec in records:
        data = json.loads(rec.read_text())
        step = data["step"] if step is None else step
        for rel, digest in data["files"].items():
            path = directory / rel
            if not path.exists() or sha256_file(path) != digest:
                raise ValueError(f"{path}: missing or modified since it was written; refusing to load "
                                 "(a checkpoint is only loaded if it matches its integrity record)")
    return int(step)


def load(engine, directory: Path, rank: int) -> dict:
    """Verify, then restore engine state and this rank's RNG; returns the rank state."""
    verify(directory)
    engine.load_checkpoint(str(directory), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
    state = json.loads((Path(directory) / f"forge_rank{rank}.json").read_text())
    set_rng_state(state["rng"])
    return state


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under a Ray Train run directory, by recorded step."""
    best, best_step = None, -1
    for record in Path(root).glob(f"**/{RECORD}"):
        try:
            step = json.loads(record.read_text())["step"]
        except (OSError, ValueError, KeyError):
            continue
        if step > best_step:
            best, best_step = record.parent, step
    return best
