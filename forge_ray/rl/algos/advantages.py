"""Advantage estimators, pure torch, registered by name.

Shapes: ``[B, T]`` per response token (``mask`` marks real response tokens, left-aligned),
``[B]`` per response. Responses of one prompt are contiguous: rows ``g·n … g·n+n-1`` are the
``n`` samples of prompt ``g`` (``group_size = n``).

- ``gae`` (PPO): generalised advantage estimation on token rewards with a critic's values.
- ``grpo``: each response's score minus its group's mean, divided by the group's std.
- ``rloo``: score minus the mean of the *other* responses of the same prompt (leave-one-out),
  as the last token's reward of KL-shaped token rewards whose returns are the advantages
  (OpenRLHF's form: the KL penalty to the reference is in the reward).
- ``reinforce++``: discounted return of the token rewards (score at the last token, minus the
  per-token KL penalty), whitened over the whole batch — no critic, no groups needed.

Every estimator takes keyword arguments and ignores those it does not need, so the
controller calls ``ESTIMATORS[name](**batch)`` without branching on the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def token_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards: ``−kl_coef·kl`` on every response token, plus the sequence score on
    its last real token (the shaping OpenRLHF and TRL use when the KL penalty is in the reward)."""
    rewards = torch.zeros_like(mask, dtype=torch.float32)
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl * mask
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (positions * (mask > 0)).argmax(-1)  # index of each response's last real token
    rewards[torch.arange(mask.shape[0], device=mask.device), last] += scores.float()
    return rewards


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x − mean) / std`` over the masked entries; zero elsewhere."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * m


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns) over response tokens: 0 for a critic that
    predicts nothing (a constant), 1 for a perfect one, negative for one that adds noise.
    Measured on a fresh batch *before* the critic trains on it: what it generalises."""
    m = mask.bool()
    r, v = returns[m].float(), values[m].float()
    var = r.var(unbiased=False)
    return float(1 - (r - v).var(unbiased=False) / var) if var > 0 else 0.0


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running * mask[:, t]
        returns[:, t] = running
    return returns * mask


def gae(*, scores: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, kl: torch.Tensor | None = None,
        kl_coef: float = 0.0, gamma: float = 1.0, lam: float = 0.95, whiten: bool = False,
        **_) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by GAE: ``δ_t = r_t + γ·V_{t+1} − V_t``, ``A_t = δ_t + γλ·A_{t+1}``.
    ``whiten``: the advantages (not the returns the critic fits) are whitened over the batch's
    response tokens, as OpenRLHF and verl do by default — one step's scale no longer depends
    on how large this batch's rewards happen to be."""
    m = mask.float()
    rewards = token_rewards(scores, mask, kl, kl_coef)
    values = values * m
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (m[:, t + 1] if t + 1 < rewards.shape[1] else 0.0)
        adv[:, t] = last
    adv = adv * m
    returns = (adv + values) * m
    return (masked_whiten(adv, mask) if whiten else adv), returns


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 2 or scores.shape[0] % group_size:
        raise ValueError(f"{scores.shape[0]} responses do not split into groups of {group_size} (need n_samples ≥ 2)")
    return scores.view(-1, group_size)


def grpo(*, scores: torch.Tensor, mask: torch.Tensor, group_size: int, eps: float = 1e-6,
         std_normalize: bool = True, **_) -> tuple[torch.Tensor, None]:
    """Group-normalised advantages, the same for every token of a response (Shao et al. 2024).
    ``std_normalize=False`` is Dr. GRPO's form: centred only, so questions whose samples
    barely differ (too easy or too hard) are not scaled up to the weight of the others."""
    g = _groups(scores, group_size)
    centred = g - g.mean(-1, keepdim=True)
    if std_normalize:
        centred = centred / (g.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)[:, None] * mask, None


def rloo(*, scores: torch.Tensor, mask: torch.Tensor, group_size: int, kl: torch.Tensor | None = None,
         kl_coef: float = 0.0, gamma: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out baseline ``r_i − mean_{j≠i} r_j`` (Ahmadian et al. 2024) on the last
    token, ``−kl_coef·kl`` on every token, and the advantages the (discounted) returns of
    those token rewards: with no KL every token of a response gets its centred score."""
    g = _groups(scores, group_size)
    baseline = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
    returns = discounted_returns(token_rewards((g - baseline).reshape(-1), mask, kl, kl_coef), mask.float(), gamma)
    return returns, returns


def reinforce_pp(*, scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, kl_coef: float = 0.0,
                 gamma: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): returns of KL-shaped token rewards, whitened across the batch."""
    returns = discounted_returns(token_rewards(scores, mask, kl, kl_coef), mask.float(), gamma)
    return masked_whiten(returns, mask), returns


ESTIMATORS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor | None]]] = {
    "gae": gae, "grpo": grpo, "rloo": rloo, "reinforce++": reinforce_pp,
}
