"""Training checkpoints: DeepSpeed engine state + data position + RNG, with an integrity record.

A checkpoint directory holds DeepSpeed's files (each rank writes its own shards), one
``forge_rank{r}.json`` per rank (step, data-stream state, RNG states) and, from rank 0,
``forge_checkpoint.json`` listing every file with its SHA-256 and the world size. Before
DeepSpeed loads anything (it uses ``torch.load``, i.e. pickle), every file's hash is checked
against that record: a checkpoint is only loaded if it is byte-for-byte what this run wrote.

Every node can write the storage, so a hash list alone proves nothing: whoever swaps a file
for a pickle can recompute the hashes. Each record is therefore signed with an HMAC keyed by
the cluster's checkpoint secret, which the storage does not hold — ``$FORGE_CHECKPOINT_SECRET``,
or the file ``$FORGE_CHECKPOINT_SECRET_FILE`` (default ``~/.forge/checkpoint_secret``, created
0600 on first use); on a multi-node cluster every node gets the same secret, distributed like
Ray's auth token. A record without a valid signature is refused before anything is read, and a
checkpoint is loaded from a private copy that was verified, so a file swapped between the check
and DeepSpeed's load is never the one loaded.

Ray Train copies each rank's directory into storage on its own, so a crash or a full disk
can leave a checkpoint with some ranks' files missing or cut short. Such a checkpoint fails
:func:`verify` (a rank's record is absent, or a hash differs) and :func:`latest` passes over
it to the newest complete one: a partially written checkpoint is never resumed from.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

TAG = "engine"
RECORD = "forge_checkpoint.json"
SECRET_ENV = "FORGE_CHECKPOINT_SECRET"
SECRET_FILE_ENV = "FORGE_CHECKPOINT_SECRET_FILE"
log = logging.getLogger(__name__)


def _secret() -> bytes:
    """The cluster's checkpoint secret (see the module docstring); created on first use."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    path = Path(os.environ.get(SECRET_FILE_ENV) or "~/.forge/checkpoint_secret").expanduser()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # whole or not at all: a rank racing us reads a complete secret
        except FileExistsError:  # another rank made it first
            pass
        finally:
            tmp.unlink()
        return path.read_bytes().strip()


def _mac(record: dict) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True).encode()
    return hmac.new(_secret(), body, hashlib.sha256).hexdigest()


def _signed(record: dict) -> str:
    return json.dumps({**record, "mac": _mac(record)}, indent=1)


def _read_signed(path: Path) -> dict:
    """A record whose signature holds; ValueError naming the file otherwise."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not hmac.compare_digest(str(data.get("mac", "")), _mac(data)):
        raise ValueError(f"{path}: not signed with this cluster's checkpoint secret (${SECRET_ENV}, or "
                         "~/.forge/checkpoint_secret): rewritten, or written by another cluster; refusing to load it")
    return data


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
    (directory / record_name).write_text(_signed(
        {"step": step, "world_size": world, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}))


def seal(directory: Path, step: int) -> None:
    """Write the integrity record over every file already in ``directory`` (for checkpoints
    assembled by several actors, e.g. RL's policy and critic)."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != RECORD)
    (directory / RECORD).write_text(_signed(
        {"step": step, "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}))


def verify(directory: Path) -> int:
    """Check every record's signature and every recorded file's hash; returns the step.
    Raises on any mismatch, and on a file that no record lists."""
    directory = Path(directory)
    records = [directory / RECORD, *sorted(directory.glob("forge_files_rank*.json"))]
    if not records[0].exists():
        raise ValueError(f"{directory}: no {RECORD}; not a forge checkpoint, refusing to load it")
    world = _read_signed(records[0]).get("world_size", 1)
    for r in range(1, world):
        if not (directory / f"forge_files_rank{r}.json").exists():
            raise ValueError(f"{directory}: rank {r}'s files never arrived (a partially written checkpoint); "
                             "refusing to load it")
    step, listed = None, set()
    for rec in records:
        data = _read_signed(rec)
        step = data["step"] if step is None else step
        for rel, digest in data["files"].items():
            path = directory / rel
            listed.add(path)
            if not path.exists() or sha256_file(path) != digest:
                raise ValueError(f"{path}: missing or modified since it was written; refusing to load "
                                 "(a checkpoint is only loaded if it matches its integrity record)")
    planted = [p for p in directory.rglob("*") if p.is_file() and p not in listed and p not in records]
    if planted:
        raise ValueError(f"{planted[0]}: in the checkpoint but in none of its signed records; refusing to load it")
    return int(step)


@contextlib.contextmanager
def verified_copy(directory: Path):
    """A private copy of the checkpoint (mode 0700), verified after copying: what is loaded from
    it is what was checked, whatever happens to the shared storage meanwhile."""
    private = Path(tempfile.mkdtemp(prefix="forge-ckpt-"))
    try:
        copy = private / Path(directory).name
        shutil.copytree(directory, copy, symlinks=False)
        verify(copy)
        yield copy
    finally:
        shutil.rmtree(private, ignore_errors=True)


def load(engine, directory: Path, rank: int) -> dict:
    """Verify (a private copy), then restore engine state and this rank's RNG; returns the rank state."""
    with verified_copy(directory) as copy:
        engine.load_checkpoint(str(copy), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        state = json.loads((copy / f"forge_rank{rank}.json").read_text())
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
