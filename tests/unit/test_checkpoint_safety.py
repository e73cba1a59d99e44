"""Checkpoints are only loaded when they match the integrity record written with them, and that
record is signed with the cluster's secret: a pickle dropped in as a checkpoint, a swapped file,
a swapped file *with the record rewritten to match*, and a file the records do not list are all
refused before anything is unpickled; what is loaded is a private, verified copy."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from forge_ray.train import checkpoint
from forge_ray.train.checkpoint import latest, seal, verified_copy, verify


class Boom:  # unpickling this would run code: the point is that nobody unpickles it
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


@pytest.fixture(autouse=True)
def cluster_secret(monkeypatch):
    monkeypatch.setenv(checkpoint.SECRET_ENV, "this-clusters-secret")


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
            (ckpt / record).write_text(checkpoint._signed({"step": step, "world_size": 2, "files": files}))
    with pytest.raises(ValueError, match="rank 1's files never arrived"):
        verify(root / "checkpoint_b")
    assert latest(root) == root / "checkpoint_a" and verify(root / "checkpoint_a") == 8
    (root / "checkpoint_a" / "forge_checkpoint.json").write_text('{"step": 8, "wor')  # a record cut short
    assert latest(root) is None


def _rewrite_record(ckpt):
    """What a storage writer can do: recompute every hash and write the record again."""
    files = {str(p.relative_to(ckpt)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != "forge_checkpoint.json"}
    return {"step": 16, "files": files}


def test_a_swapped_pickle_with_a_rewritten_record_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    root = tmp_path / "train"
    ckpt = root / "checkpoint_a"
    (ckpt / "engine").mkdir(parents=True)
    (ckpt / "engine" / "model_states.pt").write_bytes(b"weights as written")
    seal(ckpt, step=8)
    marker = tmp_path / "unpickled"
    boom = pickle.dumps(type("Boom", (), {"__reduce__": lambda self: (marker.write_text, ("ran",))})())
    (ckpt / "engine" / "model_states.pt").write_bytes(boom)
    record = _rewrite_record(ckpt)
    (ckpt / "forge_checkpoint.json").write_text(json.dumps(record))  # hashes right, no signature
    with pytest.raises(ValueError, match="not signed with this cluster's checkpoint secret"):
        verify(ckpt)
    monkeypatch.setenv(checkpoint.SECRET_ENV, "the-attackers-guess")  # signed, with another secret
    (ckpt / "forge_checkpoint.json").write_text(checkpoint._signed(record))
    monkeypatch.setenv(checkpoint.SECRET_ENV, "this-clusters-secret")
    with pytest.raises(ValueError, match="not signed with this cluster's checkpoint secret"):
        verify(ckpt)
    assert latest(root) is None and not marker.exists()


def test_a_file_no_record_lists_is_refused(tmp_path):
    ckpt = tmp_path / "checkpoint_a"
    (ckpt / "engine").mkdir(parents=True)
    (ckpt / "engine" / "model_states.pt").write_bytes(b"weights as written")
    seal(ckpt, step=8)
    (ckpt / "engine" / "extra_states.pt").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match=r"extra_states\.pt: in the checkpoint but in none of its signed records"):
        verify(ckpt)


def test_what_is_loaded_is_a_private_copy_checked_after_copying(tmp_path):
    ckpt = tmp_path / "checkpoint_a"
    (ckpt / "engine").mkdir(parents=True)
    (ckpt / "engine" / "model_states.pt").write_bytes(b"weights as written")
    seal(ckpt, step=8)
    with verified_copy(ckpt) as copy:
        assert copy != ckpt and (copy.parent.stat().st_mode & 0o077) == 0  # nobody else can write it
        (ckpt / "engine" / "model_states.pt").write_bytes(pickle.dumps(Boom()))  # swapped after the check
        assert (copy / "engine" / "model_states.pt").read_bytes() == b"weights as written"
    assert not copy.exists()


def test_the_secret_is_created_once_readable_by_its_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv(checkpoint.SECRET_ENV)
    path = tmp_path / "home" / ".forge" / "checkpoint_secret"
    monkeypatch.setenv(checkpoint.SECRET_FILE_ENV, str(path))
    first = checkpoint._secret()
    assert len(first) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert checkpoint._secret() == first
