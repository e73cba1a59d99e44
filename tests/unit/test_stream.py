"""Resumable streaming: stop after k batches, resume, same sequence; ranks disjoint."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forge_ray.data.stream import PackedStream


@pytest.fixture
def shards(tmp_path):
    files, row = [], 0
    for i, n in enumerate([300, 123, 517]):
        ids = [[row + j, row + j] for j in range(n)]
        row += n
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({"input_ids": ids}), path)
        files.append(str(path))
    return files


def _ids(batches):
    return [tuple(b["input_ids"][:, 0].tolist()) for b in batches]


def test_resume_yields_the_same_batches_as_an_uninterrupted_run(shards):
    full = _ids(itertools.islice(iter(PackedStream(shards, batch_size=16, seed=3, chunk_rows=64)), 130))
    first = PackedStream(shards, batch_size=16, seed=3, chunk_rows=64)
    head = _ids(itertools.islice(iter(first), 47))
    saved = first.state_dict()
    resumed = PackedStream(shards, batch_size=16, seed=3, chunk_rows=64)
    resumed.load_state_dict(saved)
    tail = _ids(itertools.islice(iter(resumed), 130 - 47))
    assert head + tail == full  # crosses two epoch boundaries (58 batches per epoch)


def test_epoch_covers_each_row_once_and_reshuffles(shards):
    s = PackedStream(shards, batch_size=10, seed=0, chunk_rows=50)
    epoch0 = [i for b in _ids(itertools.islice(iter(s), s.batches_per_epoch)) for i in b]
    epoch1 = [i for b in _ids(itertools.islice(iter(s), s.batches_per_epoch)) for i in b]
    assert len(set(epoch0)) == len(epoch0) == s.batches_per_epoch * 10
    assert epoch0 != sorted(epoch0)  # shuffled
    assert epoch0 != epoch1  # and differently each epoch


def test_ranks_get_disjoint_equal_shares(shards):
    seen = []
    for rank in range(3):
        s = PackedStream(shards, rank=rank, world=3, batch_size=8, seed=1)
        rows = [i for b in _ids(itertools.islice(iter(s), s.batches_per_epoch)) for i in b]
        assert len(rows) == s.batches_per_epoch * 8
        seen.append(set(rows))
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])


def test_too_small_dataset_is_a_clear_error(shards):
    with pytest.raises(ValueError, match="fewer than one batch"):
        PackedStream(shards[1:2], world=16, batch_size=16)


def test_batches_are_arrays(shards):
    batch = next(iter(PackedStream(shards, batch_size=4)))
    assert batch["input_ids"].shape == (4, 2) and batch["input_ids"].dtype == np.int64
