"""Checkpoints are only loaded when they match the integrity record written with them: a
pickle dropped in as a checkpoint is never picked for resume nor unpickled, and a sealed
checkpoint whose file was swapped for a pickle is refused, naming the file."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from forge_ray.train.checkpoint import latest, seal, verify


class Boom:  # unpickling this would run code: the point is that nobody unpickles it
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def test_a_pickle_placed_as_a_checkpoint_is_refused(tmp_path):
    planted = tmp_path / "train" / "checkpoint_2026-11-29_00-00-00.000000"
    planted.mkdir(parents=True)
    (planted / "mp_rank_00_model_states.pt").write_bytes(pickle.dumps(Boom()))
    assert latest(tmp_path / "train") is None  # no integrity record: never a resume candidate
    with pytest.raises(ValueError, match="not a forge checkpoint, refusing to load it"):
        verify(planted)


def test_a_sealed_checkpoint_with_a_swapped_file_is_refused(tmp_path):
    ckpt = tmp_path / "train" / "checkpoint_a"
    (ckpt / "engine").mkdir(parents=True)
    (ckpt / "engine" / "model_states.pt").write_bytes(b"weights as written")
    seal(ckpt, step=8)
    assert verify(ckpt) == 8 and latest(tmp_path / "train") == ckpt
    (ckpt / "engine" / "model_states.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match=r"model_states\.pt: missing or modified since it was written; refusing"):
        verify(ckpt)


def test_a_checkpoint_missing_a_ranks_files_is_passed_over_for_the_previous_one(tmp_path):
    """Ray Train copies each rank's files on its own: a crash (or a full disk) between them
    leaves rank 0's record without rank 1's files. Resume must pick the older, whole one."""
    root = tmp_path / "train"
    for name, step, ranks in (("checkpoint_a", 8, (0, 1)), ("checkpoint_b", 16, (0,))):
        ckpt = root / name
        (ckpt / "engine").mkdir(parents=True)
        for r in ranks:
            (ckpt / "engine" / f"rank{r}_states.pt").write_bytes(f"rank {r} at {step}".encode())
            record = "forge_checkpoint.json" if r == 0 else f"forge_files_rank{r}.json"
            files = {f"engine/rank{r}_states.pt": hashlib.sha256(f"rank {r} at {step}".encode()).hexdigest()}
            (ckpt / record).write_text(json.dumps({"step": step, "world_size": 2, "files": files}))
    with pytest.raises(ValueError, match="rank 1's files never arrived"):
        verify(root / "checkpoint_b")
    assert latest(root) == root / "checkpoint_a" and verify(root / "checkpoint_a") == 8
    (root / "checkpoint_a" / "forge_checkpoint.json").write_text('{"step": 8, "wor')  # a record cut short
    assert latest(root) is None
