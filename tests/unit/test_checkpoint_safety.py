"""Checkpoints are only loaded when they match the integrity record written with them: a
pickle dropped in as a checkpoint is never picked for resume nor unpickled, and a sealed
checkpoint whose file was swapped for a pickle is refused, naming the file."""

from __future__ import annotations

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
