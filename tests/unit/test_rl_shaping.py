"""Rollout shaping against hand-worked cases: DAPO's overlong penalty and truncation mask,
dynamic sampling, and the engine–trainer mismatch corrections (no Ray, no models)."""

from __future__ import annotations

import math

import pytest
import torch

from forge_ray.rl.algos import shaping


def test_overlong_penalty_falls_linearly_over_the_buffer():
    lengths = torch.tensor([10, 24, 28, 31, 32])
    got = shaping.overlong_penalty(lengths, max_new_tokens=32, buffer=8, penalty=1.0)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.5, -7 / 8, -1.0])
    assert shaping.overlong_penalty(lengths, 32, buffer=0).tolist() == [0.0] * 5


def test_truncated_means_at_the_limit_without_an_end_token():
    end = [2]
    responses = [[5, 6, 2], [5, 6, 7], [5, 2], [5, 6]]
    assert shaping.truncated(responses, end, max_new_tokens=3).tolist() == [False, True, False, False]
    assert shaping.ends_turn(responses, end) == pytest.approx(0.5)


def test_dynamic_sampling_refills_a_batch_in_which_half_the_groups_are_constant():
    group_size = 2
    draws = iter([[1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0],   # groups: constant, mixed, constant, mixed
                  [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])  # mixed, constant, mixed, constant
    batches = []

    def draw():
        scores = torch.tensor(next(draws))
        batches.append(scores)
        return [scores[i:i + group_size] for i in range(0, len(scores), group_size)]

    def keep(groups):
        return shaping.informative_groups(torch.cat(groups), group_size).tolist()

    filled = shaping.fill_batch(draw, keep, want=4, max_draws=3)
    assert filled.draws == 2 and filled.drawn == 8 and filled.filtered == 4
    assert filled.filtered_frac == 0.5
    assert [g.tolist() for g in filled.groups] == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]


def test_dynamic_sampling_stops_after_its_draws():
    calls = []

    def draw():
        calls.append(1)
        return [torch.ones(2)] * 4  # every group solved: no signal

    filled = shaping.fill_batch(draw, lambda gs: [False] * len(gs), want=4, max_draws=3)
    assert len(calls) == 3 and filled.groups == [] and filled.filtered_frac == 1.0


def test_mismatch_and_truncated_importance_weights():
    trainer = torch.tensor([[math.log(0.6), math.log(0.3), 0.0]])
    engine = torch.tensor([[math.log(0.2), math.log(0.6), 5.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert shaping.logprob_mismatch(trainer, engine, mask) == pytest.approx((math.log(3) + math.log(2)) / 2)
    weights = shaping.truncated_is_weights(trainer, engine, cap=2.0)
    assert weights[0, :2].tolist() == pytest.approx([2.0, 0.5])  # ratio 3 capped at 2; 0.5 kept
    keep = shaping.masked_is_keep(trainer, engine, cap=2.0)
    assert keep[0, :2].tolist() == [False, True]  # 3 is outside [1/2, 2]; 0.5 is on its edge
