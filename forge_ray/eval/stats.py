"""The statistics of a comparison, in plain numpy: bootstrap confidence intervals of a
mean score, pairwise win rates with intervals, and Bradley–Terry ratings on the Elo scale
(as Chatbot Arena reports them) when more than two models are compared.

    >>> lo, hi = bootstrap_ci([1, 0, 1, 1, 0, 1, 1, 1], seed=0)
    >>> 0.3 < lo < 0.75 < hi <= 1.0
    True
    >>> win_rate([1, 1, 0.5, 0])["win_rate"]
    0.625
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], samples: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (items resampled with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def win_rate(outcomes: Sequence[float], samples: int = 1000, seed: int = 0) -> dict:
    """Outcomes per item from A's side (1 win, 0.5 tie, 0 loss): A's win rate (ties count
    half) with a bootstrap interval, and the counts."""
    x = [float(o) for o in outcomes]
    lo, hi = bootstrap_ci(x, samples=samples, seed=seed)
    return {"win_rate": sum(x) / len(x) if x else math.nan, "ci": [lo, hi], "wins": sum(o == 1 for o in x),
            "ties": sum(o == 0.5 for o in x), "losses": sum(o == 0 for o in x), "n": len(x)}


def bradley_terry(names: list[str], games: list[tuple[str, str, float]], iters: int = 500,
                  prior: float = 0.5) -> dict[str, float]:
    """Bradley–Terry strengths by minorise–maximise (Hunter 2004) from ``(a, b, outcome_for_a)``
    games, as Elo-scale ratings centred on 1000 (400·log10 of the strength). ``prior`` adds a
    virtual tie between every pair so a model that never lost keeps a finite rating."""
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    wins = np.zeros((k, k))
    for a, b, out in games:
        wins[index[a], index[b]] += out
        wins[index[b], index[a]] += 1 - out
    wins += prior * (1 - np.eye(k))
    played = wins + wins.T
    p = np.ones(k)
    for _ in range(iters):
        denom = (played / (p[:, None] + p[None, :] + 1e-300)).sum(axis=1)
        new = wins.sum(axis=1) / np.maximum(denom, 1e-300)
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < 1e-10:
            p = new
            break
        p = new
    ratings = 400 * np.log10(p)
    return {n: float(1000 + r - ratings.mean()) for n, r in zip(names, ratings)}


def bootstrap_ratings(names: list[str], games: list[tuple[str, str, float]], samples: int = 200,
                      seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of the Bradley–Terry ratings, games resampled with replacement."""
    rng = np.random.default_rng(seed)
    draws = {n: [] for n in names}
    for _ in range(samples):
        pick = rng.integers(0, len(games), size=len(games))
        for n, r in bradley_terry(names, [games[i] for i in pick], iters=200).items():
            draws[n].append(r)
    return {n: [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] for n, v in draws.items()}
