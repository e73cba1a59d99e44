"""Policy-gradient losses, pure torch: the policy-loss kinds (PPO's token ratio, GSPO's
sequence ratio, CISPO's clipped importance weights), dual clip, the value loss, KL
estimators, entropy, and the token/sequence aggregation choice.

All per-token tensors are ``[B, T]`` over response tokens with a ``mask``. Log-probs are
of the sampled tokens. The aggregation matters: ``token-mean`` weights every token of the
batch equally (DAPO: long answers are not diluted), ``seq-mean-token-mean`` weights every
response equally (GRPO's original form, and GSPO's), ``seq-mean-token-sum`` is the
unnormalised REINFORCE form, and ``seq-mean-token-sum-norm`` divides each response's sum by
one constant (Dr. GRPO: the longest response allowed), so no response's tokens weigh more
because the response is short.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the k3 estimate is clamped to this (verl's ``low_var_kl`` and OpenRLHF clamp the estimate
#: itself, so one outlier token with log-ratio 8 adds 10 to the loss, not e^8 − 9 ≈ 2,970)
K3_CLAMP = 10.0

#: a sequence's mean log-ratio (GSPO) above this is clamped before the exponential
MAX_LOG_RATIO = 10.0


def aggregate(x: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              norm_length: float | None = None) -> torch.Tensor:
    """One number from per-token values ``x``: see the module docstring for the modes.
    ``norm_length`` is ``seq-mean-token-sum-norm``'s constant (default: ``x``'s width)."""
    m = mask.float()
    if mode == "token-mean":
        return (x * m).sum() / m.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return ((x * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if mode == "seq-mean-token-sum":
        return (x * m).sum(-1).mean()
    if mode == "seq-mean-token-sum-norm":
        return ((x * m).sum(-1) / float(norm_length or x.shape[-1])).mean()
    raise ValueError(f"unknown loss aggregation {mode!r}; use one of {', '.join(AGGREGATIONS)}")


AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``log π − log π_ref``: unbiased, high variance, can be negative."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``½ (log π − log π_ref)²``: low variance, biased, never negative."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """``e^{r} − 1 − r`` with ``r = log π_ref − log π``: unbiased and never negative
    (Schulman), clamped at :data:`K3_CLAMP` as verl and OpenRLHF do (the log-ratio is also
    kept within ±20 so the exponential stays finite)."""
    r = (ref_logp - logp).clamp(-20, 20)
    return (torch.exp(r) - 1 - r).clamp(max=K3_CLAMP)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2,
                                                                                   "k3": kl_k3}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    return (x * m).sum() / m.sum().clamp(min=1)


def token_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PPO's per-token importance ratio ``π(y_t)/π_old(y_t)``."""
    return torch.exp(logp - old_logp)


def sequence_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's ratio ``s_i = (π(y_i)/π_old(y_i))^{1/|y_i|}`` — the geometric mean of the
    response's token ratios — on every token of the response, in GSPO-token form: its value
    is ``s_i`` and its gradient flows through each token's own log-prob (``s_i · ∇log π(y_t)``)."""
    m = mask.float()
    seq_log = ((logp - old_logp) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    log_ratio = seq_log.detach() + logp - logp.detach()
    return torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))


def _clipped_surrogate(ratio, advantages, low, high, dual_clip):
    """``max(−ρA, −clip(ρ)A)``, and for negative advantages at most ``−c·A`` (dual clip, Ye
    et al. 2020: a huge ratio on a bad action cannot make the loss unbounded)."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - low, 1 + high)
    losses = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(losses, dtype=torch.bool)
    if dual_clip is not None:
        capped = -advantages * dual_clip
        dual = (advantages < 0) & (losses > capped)
        losses = torch.where(advantages < 0, torch.minimum(losses, capped), losses)
    return losses, clipped > unclipped, dual


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2, clip_eps_high: float | None = None, aggregation: str = "token-mean",
                kind: str = "ppo", dual_clip: float | None = None, is_weights: torch.Tensor | None = None,
                norm_length: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The policy loss of ``kind`` (a key of :data:`POLICY_LOSSES`) aggregated over ``mask``;
    returns the loss and, for the logs, the share of tokens whose ratio was clipped, the
    dual-clip share and the approximate KL to the sampling policy.

    ``clip_eps`` / ``clip_eps_high`` are the lower and upper bounds ``1 − ε_low … 1 + ε_high``
    (DAPO's clip-higher: a larger upper bound leaves room for unlikely tokens to grow).
    ``is_weights`` (detached, e.g. truncated importance weights for the engine–trainer
    mismatch) multiply each token's loss."""
    high = clip_eps if clip_eps_high is None else clip_eps_high
    losses, clipped, dual = POLICY_LOSSES[kind](logp, old_logp, advantages, mask, clip_eps, high, dual_clip)
    if is_weights is not None:
        losses = losses * is_weights.detach()
    with torch.no_grad():
        stats = {"clip_frac": _masked_mean(clipped.float(), mask), "dual_clip_frac": _masked_mean(dual.float(), mask),
                 "approx_kl": _masked_mean(kl_k3(logp, old_logp), mask)}
    return aggregate(losses, mask, aggregation, norm_length), stats


def _ppo(logp, old_logp, advantages, mask, low, high, dual_clip):
    return _clipped_surrogate(token_ratio(logp, old_logp, mask), advantages, low, high, dual_clip)


def _gspo(logp, old_logp, advantages, mask, low, high, dual_clip):
    return _clipped_surrogate(sequence_ratio(logp, old_logp, mask), advantages, low, high, dual_clip)


def _cispo(logp, old_logp, advantages, mask, low, high, dual_clip):
    """CISPO (MiniMax-M1): ``−sg(clip(ρ, 1−ε_low, 1+ε_high)) · A · log π`` — the importance
    weight is clipped and its gradient stopped, so every token keeps a gradient (PPO's clip
    drops the tokens outside the trust region, often the rare reasoning tokens)."""
    ratio = token_ratio(logp, old_logp, mask)
    weight = ratio.clamp(1 - low, 1 + high).detach()
    losses = -advantages * weight * logp
    return losses, (weight != ratio.detach()), torch.zeros_like(losses, dtype=torch.bool)


POLICY_LOSSES = {"ppo": _ppo, "gspo": _gspo, "cispo": _cispo}


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
