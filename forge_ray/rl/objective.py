"""The RL training objectives as ``nn.Module``s, so a DeepSpeed engine runs them whole like
every other objective: the policy's clipped surrogate (+ KL loss term, − entropy bonus) and
the critic's clipped value loss. The maths lives in :mod:`forge_ray.rl.algos.losses`.

A batch holds the packed rollouts (``sequences``, ``attention_mask``, ``response_mask``)
and what the controller computed once per rollout: ``old_logp`` (the policy before this
update), ``ref_logp`` (the frozen reference), ``advantages``, ``is_weights`` (importance
weights for the rollout engine's own distribution: ones unless a correction is on) and
``loss_mask`` (the response tokens the policy loss counts: all of them, less truncated
samples or masked-IS tokens when those options are on); for the critic ``old_values`` and
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

    kind: str = "ppo"  # a key of losses.POLICY_LOSSES
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    dual_clip: float | None = None
    kl_loss_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    aggregation: str = "token-mean"
    norm_length: float | None = None  # seq-mean-token-sum-norm's constant (max_new_tokens)


@dataclass(frozen=True)
class CriticLoss:
    """The critic objective's settings (see :class:`CriticObjective`)."""

    value_clip: float | None = 0.2
    aggregation: str = "token-mean"


class PolicyObjective(nn.Module):
    batch_keys = ("sequences", "attention_mask", "loss_mask", "old_logp", "ref_logp", "advantages", "is_weights")

    def __init__(self, model: nn.Module, loss: PolicyLoss = PolicyLoss()):
        super().__init__()
        self.model, self.loss = model, loss
        self.kl = KL_ESTIMATORS[loss.kl_estimator]
        self.stats: dict = {}

    def forward(self, sequences, attention_mask, loss_mask, old_logp, ref_logp, advantages, is_weights):
        c = self.loss
        logp, ent = token_logps(self.model, sequences, attention_mask, return_entropy=True)
        loss, info = policy_loss(logp, old_logp, advantages, loss_mask, c.clip_eps, c.clip_eps_high, c.aggregation,
                                 kind=c.kind, dual_clip=c.dual_clip, is_weights=is_weights,
                                 norm_length=c.norm_length)
        kl = aggregate(self.kl(logp, ref_logp), loss_mask, c.aggregation, c.norm_length)
        mean_entropy = aggregate(ent, loss_mask, c.aggregation, c.norm_length)
        total = loss + c.kl_loss_coef * kl - c.entropy_coef * mean_entropy
        self.stats = {"policy_loss": loss.detach(), "kl": kl.detach(), "entropy": mean_entropy.detach(), **info}
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
