"""Training checkpoints: DeepSpeed engine state + data position + RNG, with an integrity record.

A checkpoint directory holds DeepSpeed's files (each rank writes its own shards), one
``forge_rank{r}.json`` per rank (step, data-stream state, RNG states) and, from rank 0,
``forge_checkpoint.json`` listing every file with its SHA-256 and the world size. Before
DeepSpeed loads anything (it uses ``torch.load``, i.e. pickle), every file's hash is checked
against that record: a checkpoint is only loaded if it is byte-for-byte what this run wrote.

Ray Train copies each rank's directory into storage on its own, so a crash or a full disk
can leave a checkpoint with some ranks' files missing or cut short. Such a checkpoint fails
:func:`verify` (a rank's record is absent, or a hash differs) and :func:`latest` passes over
it to the newest complete one: a partially written checkpoint is never resumed from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

TAG = "engine"
RECORD = "forge_checkpoint.json"
log = logging.getLogger(__name__)


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


def save(engine, directory: Path, rank: int, step: int, stream_state: dict, extra: dict | None = None,
         world: int = 1) -> None:
    """Every rank calls this with the same ``directory`` layout (its local copy)."""
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory), tag=TAG)
    state = {"step": step, "stream": stream_state, "rng": rng_state(), **(extra or {})}
    (directory / f"forge_rank{rank}.json").write_text(json.dumps(state))
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != RECORD)
    record_name = RECORD if rank == 0 else f"forge_files_rank{rank}.json"
    (directory / record_name).write_text(json.dumps(
        {"step": step, "world_size": world, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}},
        indent=1))


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
    world = json.loads(records[0].read_text()).get("world_size", 1)
    for r in range(1, world):
        if not (directory / f"forge_files_rank{r}.json").exists():
            raise ValueError(f"{directory}: rank {r}'s files never arrived (a partially written checkpoint); "
                             "refusing to load it")
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
    """The newest checkpoint under a Ray Train run directory that passes :func:`verify`."""
    candidates = []
    for record in Path(root).glob(f"**/{RECORD}"):
        try:
            candidates.append((int(json.loads(record.read_text())["step"]), str(record.parent)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record cut short: that checkpoint was never finished
    for _, directory in sorted(candidates, reverse=True):
        try:
            verify(Path(directory))
            return Path(directory)
        except (OSError, ValueError) as exc:
            log.warning("passing over checkpoint %s: %s", directory, exc)
    return None
