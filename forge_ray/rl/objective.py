"""The RL training objectives as ``nn.Module``s, so a DeepSpeed engine runs them whole like
every other objective: the policy's clipped surrogate (+ KL loss term, − entropy bonus) and
the critic's clipped value loss. The maths lives in :mod:`forge_ray.rl.algos.losses`.

A batch holds the packed rollouts (``sequences``, ``attention_mask``, ``response_mask``)
and what the controller computed once per rollout: ``old_logp`` (the sampling policy),
``ref_logp`` (the frozen reference), ``advantages``; for the critic ``old_values`` and
``returns`` — all on the targets axis ``[B, L-1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forge_ray.rl.algos.losses import KL_ESTIMATORS, aggregate, policy_loss, value_loss
from forge_ray.rl.experience import token_logps


@dataclass(frozen=True)
class PolicyLoss:
    """The policy objective's settings, from the RL spec (see :class:`PolicyObjective`)."""

    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    kl_loss_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    aggregation: str = "token-mean"


@dataclass(frozen=True)
class CriticLoss:
    """The critic objective's settings (see :class:`CriticObjective`)."""

    value_clip: float | None = 0.2
    aggregation: str = "token-mean"


class PolicyObjective(nn.Module):
    batch_keys = ("sequences", "attention_mask", "response_mask", "old_logp", "ref_logp", "advantages")

    def __init__(self, model: nn.Module, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                 kl_loss_coef: float = 0.0, kl_estimator: str = "k3", entropy_coef: float = 0.0,
                 aggregation: str = "token-mean"):
        super().__init__()
        self.model = model
        self.clip_eps, self.clip_eps_high = clip_eps, clip_eps_high
        self.kl_loss_coef, self.kl = kl_loss_coef, KL_ESTIMATORS[kl_estimator]
        self.entropy_coef, self.aggregation = entropy_coef, aggregation
        self.stats: dict = {}

    def forward(self, sequences, attention_mask, response_mask, old_logp, ref_logp, advantages):
        logp, ent = token_logps(self.model, sequences, attention_mask, return_entropy=True)
        loss, info = policy_loss(logp, old_logp, advantages, response_mask, self.clip_eps, self.clip_eps_high,
                                 self.aggregation)
        kl = aggregate(self.kl(logp, ref_logp), response_mask, self.aggregation)
        mean_entropy = aggregate(ent, response_mask, self.aggregation)
        total = loss + self.kl_loss_coef * kl - self.entropy_coef * mean_entropy
        self.stats = {"policy_loss": loss.detach(), "kl": kl.detach(), "entropy": mean_entropy.detach(),
                      "clip_frac": info["clip_frac"], "approx_kl": info["approx_kl"]}
        return total


class CriticObjective(nn.Module):
    """Per-token values from an ``…ForTokenClassification`` model with one label (a value
    head on the backbone; exports and reloads in ``transformers``)."""

    batch_keys = ("sequences", "attention_mask", "response_mask", "old_values", "returns")

    def __init__(self, model: nn.Module, value_clip: float | None = 0.2, aggregation: str = "token-mean"):
        super().__init__()
        self.model, self.value_clip, self.aggregation = model, value_clip, aggregation
        self.stats: dict = {}

    def values(self, sequences, attention_mask) -> torch.Tensor:
        """``[B, L-1]``: the value of the state *before* each target token."""
        return self.model(input_ids=sequences, attention_mask=attention_mask).logits[:, :-1, 0].float()

    def forward(self, sequences, attention_mask, response_mask, old_values, returns):
        values = self.values(sequences, attention_mask)
        loss = value_loss(values, old_values, returns, response_mask, self.value_clip, self.aggregation)
        self.stats = {"value_loss": loss.detach()}
        return loss
