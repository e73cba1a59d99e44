"""Reward functions by name, a user's own by dotted path, and weighted combinations.

A reward is any callable ``(prompts, completions, **columns) -> list[float]``. A spec names
built-ins (``exact_match``) or a user's function (``my_pkg.rewards:score`` or
``my_pkg.rewards.score``); ``combine`` sums several with weights. A learned reward model is
another such callable (see :func:`reward_model_fn`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

RewardFn = Callable[..., list[float]]


def builtin() -> dict[str, RewardFn]:
    from forge_ray.rl.rewards import code, functions

    return {"exact_match": functions.exact_match, "normalized_match": functions.normalized_match,
            "contains": functions.contains, "contains_answer": functions.contains_answer,
            "numeric_match": functions.numeric_match, "regex_match": functions.regex_match,
            "json_valid": functions.json_valid, "length_penalty": functions.length_penalty,
            "code_tests": code.code_tests}


def load(name: str) -> RewardFn:
    """A built-in by name, or ``module:function`` / ``module.function`` by dotted path."""
    table = builtin()
    if name in table:
        return table[name]
    module_name, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not sep or not module_name:
        import difflib

        close = difflib.get_close_matches(name, list(table), n=1)
        raise KeyError(f"unknown reward {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") +
                       f" (built-ins: {', '.join(table)}; or give module:function)")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KeyError(f"reward {name!r}: cannot import {attr!r} from {module_name!r} ({exc})") from exc
    if not callable(fn):
        raise KeyError(f"reward {name!r} is not callable")
    return fn


def combine(weighted: dict[str, float] | list[str]) -> RewardFn:
    """One reward: the weighted sum of several by name (a list means weight 1 each)."""
    weights = {n: 1.0 for n in weighted} if isinstance(weighted, list) else dict(weighted)
    return weighted_sum({n: load(n) for n in weights}, list(weights.values()))


def weighted_sum(fns: dict[str, RewardFn], weights: list[float]) -> RewardFn:
    """``Σ w·fn(...)`` over reward functions (named for error messages)."""
    def total(prompts: list[str], completions: list[str], **columns) -> list[float]:
        out = [0.0] * len(completions)
        for (name, fn), weight in zip(fns.items(), weights):
            scores = fn(prompts, completions, **columns)
            if len(scores) != len(completions):
                raise ValueError(f"reward {name!r} returned {len(scores)} scores for {len(completions)} completions")
            out = [o + weight * float(s) for o, s in zip(out, scores)]
        return out

    return total


def reward_model_fn(scorer) -> RewardFn:
    """A reward-model scorer (``RewardScorer`` or its Ray actor handle) as a reward function."""
    def score(prompts: list[str], completions: list[str], **_) -> list[float]:
        if hasattr(scorer.score, "remote"):
            import ray

            return ray.get(scorer.score.remote(prompts, completions))
        return scorer.score(prompts, completions)

    return score
