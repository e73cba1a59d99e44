"""What happens to rollouts between the engines and the advantages, pure torch/python:
DAPO's overlong reward shaping and truncation masking, dynamic sampling (groups whose
samples all scored the same carry no GRPO/RLOO signal), and the engine–trainer mismatch
(the engine's log-probs of the sampled tokens against the trainer's).

Why the mismatch matters: the rollout engine (vLLM, other kernels, maybe older weights)
samples from ``π_engine``, the trainer scores with ``π_trainer``; the policy gradient is
only unbiased for the distribution that sampled. Truncated importance sampling (Yao et al.
2025, verl's ``rollout_corr``) weights each token by ``min(π_trainer/π_engine, C)``; masked
importance sampling drops tokens whose ratio leaves ``[1/C, C]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 for responses up to ``max_new_tokens − buffer``
    tokens, then falling linearly to ``−penalty`` at ``max_new_tokens`` (and ``−penalty``
    beyond): an answer that runs to the limit is paid less than one that ends in time."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_new_tokens - buffer
    over = (lengths.float() - start).clamp(min=0) / buffer
    return -penalty * over.clamp(max=1.0)


def truncated(responses: Sequence[Sequence[int]], end_ids: Sequence[int], max_new_tokens: int) -> torch.Tensor:
    """``[B]`` bool: the response reached ``max_new_tokens`` without ending its turn (no end
    token last) — DAPO's overlong filtering masks these out of the loss."""
    ends = set(end_ids)
    return torch.tensor([len(r) >= max_new_tokens and (not r or r[-1] not in ends) for r in responses],
                        dtype=torch.bool)


def ends_turn(responses: Sequence[Sequence[int]], end_ids: Sequence[int]) -> float:
    """Share of responses whose last token is an end-of-turn token (they stopped themselves)."""
    ends = set(end_ids)
    return sum(bool(r) and r[-1] in ends for r in responses) / max(len(responses), 1)


def informative_groups(scores: torch.Tensor, group_size: int, tol: float = 1e-6) -> torch.Tensor:
    """``[G]`` bool: groups whose scores are not all equal (the rest have zero advantage)."""
    g = scores.view(-1, group_size)
    return (g.max(-1).values - g.min(-1).values) > tol


G = TypeVar("G")


@dataclass
class Filled(Generic[G]):
    groups: list[G]  # at most `want` informative groups, in the order drawn
    drawn: int  # groups drawn in all
    filtered: int  # of those, the groups dropped for carrying no signal
    draws: int  # calls to draw()

    @property
    def filtered_frac(self) -> float:
        return self.filtered / max(self.drawn, 1)


def fill_batch(draw: Callable[[], list[G]], keep: Callable[[list[G]], list[bool]], want: int,
               max_draws: int) -> Filled[G]:
    """DAPO's dynamic sampling: draw batches of groups, keep the informative ones, draw again
    until ``want`` are kept or ``max_draws`` draws are spent (then train on what there is —
    a run whose prompts are all solved or all hopeless says so in ``filtered_groups_frac``
    instead of spinning)."""
    kept: list[G] = []
    drawn = filtered = draws = 0
    while len(kept) < want and draws < max_draws:
        groups = draw()
        draws += 1
        flags = keep(groups)
        drawn += len(groups)
        filtered += flags.count(False)
        kept += [g for g, ok in zip(groups, flags) if ok]
    return Filled(kept[:want], drawn, filtered, draws)


def logprob_mismatch(trainer_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean ``|log π_engine − log π_trainer|`` over the sampled (response) tokens."""
    m = mask.float()
    return float(((trainer_logp - engine_logp).abs() * m).sum() / m.sum().clamp(min=1))


def truncated_is_weights(trainer_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token ``min(π_trainer/π_engine, cap)`` (TIS): the trainer's gradient re-weighted to
    the distribution that actually sampled, its variance bounded by ``cap``."""
    return torch.exp((trainer_logp - engine_logp).clamp(max=30)).clamp(max=cap)


def masked_is_keep(trainer_logp: torch.Tensor, engine_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token bool: the ratio ``π_trainer/π_engine`` lies in ``[1/cap, cap]`` (MIS keeps
    only these tokens in the loss)."""
    return (trainer_logp - engine_logp).abs() <= math.log(cap)
