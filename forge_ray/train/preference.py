"""Preference objectives: DPO (sigmoid, IPO, conservative/label-smoothed) and the
Bradley–Terry reward model, as plain torch functions plus the ``nn.Module`` objectives the
one step loop runs.

Why pure functions first: the losses are a few lines each, and a unit test pins them to
hand-computed values on fixed log-probs; the modules only gather log-probs and scores.

A preference batch holds ``chosen_ids/chosen_mask`` and ``rejected_ids/rejected_mask``
(prompt + answer through the chat template, right-padded with the pad token; the mask
marks the assistant tokens). Both sides go through the model in one forward of ``2B``
rows, so DeepSpeed sees one loss per micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from forge_ray.train.objectives import causal_logits

# ---------------------------------------------------------------------------- maths


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, variant: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses from sequence log-probs (each ``[B]``), and the implicit rewards.

    ``h = (π_c − π_r) − (ref_c − ref_r)`` is the policy's log-ratio margin over the reference.
    sigmoid (Rafailov et al.): ``−log σ(β·h)``; cdpo: with probability ``ε`` the label is
    flipped, ``−(1−ε)·log σ(β·h) − ε·log σ(−β·h)``; ipo (Azar et al.): ``(h − 1/(2β))²``.
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if variant == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    elif variant in ("sigmoid", "cdpo"):
        eps = label_smoothing if variant == "cdpo" else 0.0
        losses = -(1.0 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    else:
        raise ValueError(f"unknown DPO loss {variant!r}; use sigmoid, ipo or cdpo")
    chosen_reward = beta * (policy_chosen - ref_chosen).detach()
    rejected_reward = beta * (policy_rejected - ref_rejected).detach()
    return losses, {"chosen_reward": chosen_reward, "rejected_reward": rejected_reward}


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Per-pair ``−log σ(r_c − r_r)``: the negative log-likelihood that chosen wins."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log-probs of the masked target tokens per row, and how many there were.

    ``logits`` are next-token logits ``[B, T-1, V]``; target ``t+1`` counts when ``mask[t+1]``."""
    targets, valid = input_ids[:, 1:], mask[:, 1:] > 0
    logp = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (logp * valid).sum(-1), valid.sum(-1)


# ---------------------------------------------------------------------------- objectives


def _both_sides(batch: dict, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack chosen over rejected: ids, answer mask, segment ids (1 = real token), positions."""
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    segments = (ids != pad_id).long()
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return ids, mask, segments, positions


class _PairObjective(nn.Module):
    batch_keys = ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")
    sequences_per_row = 2  # chosen and rejected: for tokens/s
    any_attention_kernel = False  # the reward head's forward takes HF's own padding mask

    def logged_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss.detach()

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id
        self.stats: dict = {}

    def step_metrics(self, all_reduce_mean) -> dict:
        keys = [k for k in self.stats if k.startswith("m_")]
        return dict(zip((k[2:] for k in keys), all_reduce_mean([float(self.stats[k]) for k in keys])))

    def eval_sums(self, batch: dict) -> list[float]:
        s = self.stats  # a tie (DPO before any step: policy = reference) counts half: chance
        return [float(s["correct"]) + 0.5 * float(s["ties"]), float(s["pairs"]), float(s["margin_sum"])]

    @staticmethod
    def eval_metrics(sums: list[float]) -> dict:
        correct, pairs, margin = sums
        return {"val_accuracy": correct / max(pairs, 1), "val_margin": margin / max(pairs, 1)}


class DPOObjective(_PairObjective):
    """DPO against a frozen reference held outside the module's parameters (so DeepSpeed
    neither optimises nor partitions it); its log-probs are computed under ``no_grad`` in
    the same micro-batch."""

    def __init__(self, model: nn.Module, reference: nn.Module, pad_id: int, beta: float, variant: str = "sigmoid",
                 label_smoothing: float = 0.0, sft_coef: float = 0.0):
        super().__init__(model, pad_id)
        self._reference = [reference.eval().requires_grad_(False)]  # a list: not a registered submodule
        self.beta, self.variant, self.label_smoothing, self.sft_coef = beta, variant, label_smoothing, sft_coef

    def forward(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        ids, mask, segments, positions = _both_sides(locals(), self.pad_id)
        logits, _ = causal_logits(self.model, ids, segments, positions)
        logps, counts = sequence_logps(logits, ids, mask)
        with torch.no_grad():
            ref = self._reference[0].to(ids.device)
            ref_logps, _ = sequence_logps(causal_logits(ref, ids, segments, positions)[0], ids, mask)
        b = chosen_ids.shape[0]
        losses, rewards = dpo_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:], self.beta, self.variant,
                                   self.label_smoothing)
        loss = losses.mean()
        if self.sft_coef:
            loss = loss + self.sft_coef * (-logps[:b] / counts[:b].clamp(min=1)).mean()
        margin = rewards["chosen_reward"] - rewards["rejected_reward"]
        self.stats = {
            "correct": (margin > 0).sum(), "ties": (margin == 0).sum(), "pairs": b, "margin_sum": margin.sum(),
            "m_reward_chosen": rewards["chosen_reward"].mean(), "m_reward_rejected": rewards["rejected_reward"].mean(),
            "m_reward_margin": margin.mean(), "m_accuracy": (margin > 0).float().mean(),
            # mean per-token log π/π_ref on the chosen answers: how far the policy moved
            "m_kl_chosen": ((logps[:b] - ref_logps[:b]) / counts[:b].clamp(min=1)).detach().mean(),
        }
        return loss


class RewardObjective(_PairObjective):
    """Bradley–Terry on the scalar head of an ``…ForSequenceClassification`` model.

    The score is what the HF model itself returns (its logit at the last non-pad token), so
    an exported reward model scores exactly as it did in training."""

    def forward(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        ids, _, segments, _ = _both_sides(locals(), self.pad_id)
        scores = self.model(input_ids=ids, attention_mask=segments).logits.squeeze(-1).float()
        b = chosen_ids.shape[0]
        chosen, rejected = scores[:b], scores[b:]
        loss = bradley_terry_loss(chosen, rejected).mean()
        margin = (chosen - rejected).detach()
        self.stats = {"correct": (margin > 0).sum(), "ties": (margin == 0).sum(), "pairs": b,
                      "margin_sum": margin.sum(), "m_accuracy": (margin > 0).float().mean(), "m_score_chosen": chosen.detach().mean(),
                      "m_score_rejected": rejected.detach().mean(), "m_score_std": scores.detach().std()}
        return loss
