"""Packing invariants: no token lost or duplicated, EOS at boundaries, masks exact."""

from __future__ import annotations

import random

import pytest

from forge_ray.data.pack import PackStats, pack_conversations, pack_documents, pad_to

EOS, PAD = 2, 0


def _docs(n=40, seed=0):
    rng = random.Random(seed)
    return [[rng.randint(10, 99) for _ in range(rng.randint(1, 70))] + [EOS] for _ in range(n)]


@pytest.mark.parametrize("seq_len", [8, 16, 64, 129])
def test_pretrain_packing_loses_and_duplicates_nothing(seq_len):
    docs = _docs()
    stats = PackStats()
    rows = pack_documents(docs, seq_len, PAD, stats)
    assert all(len(r["input_ids"]) == seq_len for r in rows)
    flat = [t for r in rows for t, m in zip(r["input_ids"], r["loss_mask"]) if m]
    assert flat == [t for d in docs for t in d]  # exact order, nothing lost, nothing repeated
    assert stats.tokens == len(flat) and stats.rows == len(rows) and stats.documents == len(docs)
    assert sum(r["loss_mask"].count(0) for r in rows) == stats.pad_tokens < seq_len  # only the last row pads


def test_segments_end_with_eos_and_positions_restart():
    rows = pack_documents([[5, 6, EOS], [7, EOS], [8, 9, 10, EOS]], 6, PAD)
    assert rows[0]["input_ids"] == [5, 6, EOS, 7, EOS, 8]
    assert rows[0]["segment_ids"] == [1, 1, 1, 2, 2, 3]
    assert rows[0]["position_ids"] == [0, 1, 2, 0, 1, 0]
    assert rows[1]["input_ids"] == [9, 10, EOS, PAD, PAD, PAD]
    assert rows[1]["segment_ids"] == [1, 1, 1, 0, 0, 0] and rows[1]["loss_mask"] == [1, 1, 1, 0, 0, 0]
    for r in rows:  # every completed segment ends with EOS
        for i, s in enumerate(r["segment_ids"][:-1]):
            if s and r["segment_ids"][i + 1] != s and i + 1 < len(r["segment_ids"]):
                assert r["input_ids"][i] == EOS


def test_conversations_are_packed_whole_with_exact_assistant_masks():
    convs = [([1, 11, 12, 3, 21, 22, 4], [0, 0, 0, 0, 1, 1, 1]), ([1, 13, 3, 23, 4], [0, 0, 0, 1, 1]),
             ([1, 14, 15, 16, 3, 24, 4], [0, 0, 0, 0, 0, 1, 1])]
    stats = PackStats()
    rows = pack_conversations(convs, 12, PAD, stats)
    assert len(rows) == 2  # 7 + 5 fit in 12; the third starts a new row rather than being split
    assert rows[0]["input_ids"] == convs[0][0] + convs[1][0]
    assert rows[0]["loss_mask"] == convs[0][1] + convs[1][1]
    assert rows[1]["loss_mask"] == convs[2][1] + [0] * 5
    masked = [t for r in rows for t, m in zip(r["input_ids"], r["loss_mask"]) if m]
    assert masked == [21, 22, 4, 23, 4, 24, 4]


def test_truncation_is_counted_and_targetless_conversations_dropped_visibly():
    stats = PackStats()
    rows = pack_conversations([([1] * 10 + [7, 8], [0] * 10 + [1, 1]), ([1, 2, 3, 9], [0, 0, 0, 1])], 6, PAD, stats)
    assert stats.truncated == 1 and stats.dropped_no_target == 1 and len(rows) == 1


def test_pad_to():
    assert pad_to([1, 2, 3], [0, 1, 1], 5, PAD) == ([1, 2, 3, PAD, PAD], [0, 1, 1, 0, 0], False)
    assert pad_to([1, 2, 3], [0, 1, 1], 2, PAD) == ([1, 2], [0, 1], True)
