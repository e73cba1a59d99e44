"""Policy-gradient losses, pure torch: clipped policy loss, clipped value loss, KL
estimators, entropy, and the token/sequence aggregation choice.

All per-token tensors are ``[B, T]`` over response tokens with a ``mask``. Log-probs are
of the sampled tokens. The aggregation matters: ``token-mean`` weights every token equally
(long answers dominate), ``seq-mean-token-mean`` weights every response equally (GRPO's
original form), ``seq-mean-token-sum`` is the unnormalised REINFORCE form (Dr. GRPO's
argument against length bias).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def aggregate(x: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    m = mask.float()
    if mode == "token-mean":
        return (x * m).sum() / m.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return ((x * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum":
        return (x * m).sum(-1).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}; use one of {', '.join(AGGREGATIONS)}")


AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``log π − log π_ref``: unbiased, high variance, can be negative."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``½ (log π − log π_ref)²``: low variance, biased, never negative."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``e^{r} − 1 − r`` with ``r = log π_ref − log π``: unbiased and never negative (Schulman)."""
    r = (ref_logp - logp).clamp(-20, 20)
    return torch.exp(r) - 1 - r


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2,
                                                                                   "k3": kl_k3}


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2, clip_eps_high: float | None = None,
                aggregation: str = "token-mean") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate ``−min(ρA, clip(ρ, 1−ε, 1+ε_high)A)``; returns the loss and the
    clip fraction and approximate KL to the sampling policy (for the logs)."""
    ratio = torch.exp(logp - old_logp)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + high) * advantages
    losses = -torch.minimum(unclipped, clipped)
    m = mask.float()
    with torch.no_grad():
        clip_frac = ((clipped < unclipped).float() * m).sum() / m.sum().clamp(min=1)
        approx_kl = (kl_k3(logp, old_logp) * m).sum() / m.sum().clamp(min=1)
    return aggregate(losses, mask, aggregation), {"clip_frac": clip_frac, "approx_kl": approx_kl}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2, aggregation: str = "token-mean") -> torch.Tensor:
    """``½ max((V − R)², (clip(V, V_old ± c) − R)²)``: the value may not jump far in one update."""
    losses = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        losses = torch.maximum(losses, (clipped - returns) ** 2)
    return 0.5 * aggregate(losses, mask, aggregation)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the policy's distribution, ``[B, T]`` from logits ``[B, T, V]``."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)
