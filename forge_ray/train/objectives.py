"""What a training step optimises, as an ``nn.Module`` so DeepSpeed's engine runs it whole.

:class:`CausalLMObjective` wraps a ``transformers`` causal LM: it builds the
document-confined causal mask from ``segment_ids`` (tokens of a packed row attend only to
earlier tokens of their own document), computes next-token cross-entropy on the positions
the ``loss_mask`` allows (assistant tokens for SFT), and for MoE adds the Switch-style
load-balancing loss and the router z-loss computed from the router logits of real tokens
only. The wrapped model stays a plain HF model, so export is ``save_pretrained``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from forge_ray.models.families import experts_of, final_logits, packed_attention_mask


class Objective(Protocol):
    """What the step loop needs of an objective (an ``nn.Module`` DeepSpeed runs whole):
    ``forward(**batch)`` returns the loss and leaves this step's statistics in ``stats``."""

    model: nn.Module
    stats: dict
    batch_keys: tuple[str, ...]  # the dataset columns ``forward`` takes
    sequences_per_row: int  # sequences in one row (2 for preference pairs): for tokens/s
    any_attention_kernel: bool  # forward builds its own masks, so the device may pick the kernel

    def __call__(self, **batch: torch.Tensor) -> torch.Tensor: ...

    def logged_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss figure to log for this micro-batch (without auxiliary terms)."""

    def step_metrics(self, all_reduce_mean: Callable[[list[float]], list[float]]) -> dict:
        """Extra per-step figures from the last micro-batch, averaged over ranks."""

    def eval_sums(self, batch: dict) -> list[float]:
        """Sums over one validation batch (after ``forward``), to be added over batches and ranks."""

    def eval_metrics(self, sums: list[float]) -> dict:
        """Validation metrics (``val_*``) from the summed ``eval_sums``."""


def whole_documents(segment_ids: torch.Tensor) -> bool:
    """Every row one document, no padding: plain causal attention is the document mask, and
    the kernel's own causal path needs no mask at all. Asked of host tensors only (on a GPU
    the question would wait for the device; there the block mask skips the work instead)."""
    return segment_ids.device.type == "cpu" and bool((segment_ids == segment_ids[:, :1]).all()) \
        and bool((segment_ids[:, 0] != 0).all())


def target_mask(loss_mask: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Which next-token predictions count: target allowed by ``loss_mask`` and in the same
    document as the token predicting it (never predict a document's start from the last)."""
    nxt_seg, cur_seg = segment_ids[:, 1:], segment_ids[:, :-1]
    return (loss_mask[:, 1:] > 0) & (nxt_seg == cur_seg) & (nxt_seg != 0)


def load_balancing_loss(router_logits: list[torch.Tensor], top_k: int, valid: torch.Tensor) -> torch.Tensor:
    """Switch/Mixtral auxiliary loss E·Σ f_e·P_e averaged over layers, on valid tokens only."""
    losses = []
    for logits in router_logits:
        logits = logits[valid]
        probs = logits.float().softmax(-1)
        n_experts = probs.shape[-1]
        chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, n_experts).sum(1).float()
        losses.append(n_experts * (chosen.mean(0) / top_k * probs.mean(0)).sum())
    return torch.stack(losses).mean()


def router_z_loss(router_logits: list[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
    """ST-MoE z-loss: penalises large router logits (keeps routing numerically stable)."""
    return torch.stack([torch.logsumexp(lg[valid].float(), -1).pow(2).mean() for lg in router_logits]).mean()


def expert_load(router_logits: list[torch.Tensor], top_k: int, valid: torch.Tensor) -> list[list[float]]:
    """Per layer, the share of routed token-slots each expert received."""
    out = []
    for logits in router_logits:
        idx = logits[valid].topk(top_k, dim=-1).indices.flatten()
        counts = torch.bincount(idx, minlength=logits.shape[-1]).float()
        out.append((counts / counts.sum().clamp(min=1)).tolist())
    return out


class CausalLMObjective(nn.Module):
    """Forward a packed batch, return the loss; keeps per-step statistics in ``self.stats``."""

    def __init__(self, model: nn.Module, byte_table: torch.Tensor | None = None, aux_coef: float = 0.0,
                 z_coef: float = 0.0):
        super().__init__()
        self.model = model
        experts, self.top_k, _ = experts_of(model.config)
        self.is_moe = experts > 0
        self.aux_coef, self.z_coef = aux_coef, z_coef
        self.stats: dict = {}
        self.byte_table = byte_table  # token → UTF-8 bytes, for validation bits-per-byte

    batch_keys = ("input_ids", "segment_ids", "position_ids", "loss_mask")
    sequences_per_row = 1
    any_attention_kernel = True

    def logged_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return self.stats.get("lm_loss", loss.detach())  # without the MoE terms

    def logits(self, input_ids, segment_ids, position_ids, **inputs):
        return causal_logits(self.model, input_ids, segment_ids, position_ids, self.is_moe)

    def forward(self, input_ids, segment_ids, position_ids, loss_mask, reduction: str = "mean", **inputs):
        logits, out = self.logits(input_ids, segment_ids, position_ids, **inputs)
        valid = target_mask(loss_mask, segment_ids)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1),
                              reduction="none").view_as(valid) * valid
        n_valid = valid.sum()
        self.stats = {"nll_sum": nll.sum().detach(), "targets": n_valid.detach(), "valid": valid}
        if reduction == "sum":
            return nll.sum()
        loss = nll.sum() / n_valid.clamp(min=1)
        self.stats["lm_loss"] = loss.detach()
        if self.is_moe and out.router_logits:
            real = (segment_ids != 0).reshape(-1)
            routers = [r.reshape(-1, r.shape[-1]) for r in out.router_logits]
            aux = load_balancing_loss(routers, self.top_k, real)
            z = router_z_loss(routers, real)
            loss = loss + self.aux_coef * aux + self.z_coef * z
            self.stats.update(aux_loss=aux.detach(), z_loss=z.detach(),
                              expert_load=expert_load([r.detach() for r in routers], self.top_k, real))
        return loss

    def step_metrics(self, all_reduce_mean) -> dict:
        """Extra per-step metrics from the last micro-batch (MoE: losses and expert load)."""
        if "aux_loss" not in self.stats:
            return {}
        load = self.stats["expert_load"]
        width = len(load[0])
        flat = all_reduce_mean([share for layer in load for share in layer])
        return {"aux_loss": float(self.stats["aux_loss"]), "z_loss": float(self.stats["z_loss"]),
                "expert_load": [flat[i:i + width] for i in range(0, len(flat), width)]}

    def eval_sums(self, batch: dict) -> list[float]:
        """Sums over one validation batch (after ``forward``): NLL, targets, target bytes."""
        s = self.stats
        nbytes = (self.byte_table.to(s["valid"].device)[batch["input_ids"][:, 1:]] * s["valid"]).sum()
        return [float(s["nll_sum"]), float(s["targets"]), float(nbytes)]

    @staticmethod
    def eval_metrics(sums: list[float]) -> dict:
        nll, targets, nbytes = sums
        return {"val_loss": nll / max(targets, 1), "val_bpb": bits_per_byte(nll, int(nbytes))}


def causal_logits(model, input_ids, segment_ids, position_ids, moe: bool = False):
    """Next-token logits ``[B, T-1, V]`` (fp32) of a packed batch under the document mask (the
    family's: sliding layers keep their window) and the family's final soft-cap."""
    config = model.config
    flex = getattr(config, "_attn_implementation", None) == "flex_attention"
    # whole documents (CPU): the model's own causal (and sliding) masks are the document mask
    mask = None if not flex and whole_documents(segment_ids) else packed_attention_mask(config, segment_ids)
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    out = base(input_ids=input_ids, position_ids=position_ids, attention_mask=mask,
               **({"output_router_logits": True} if moe else {}))
    return final_logits(model, out.last_hidden_state[:, :-1]).float(), out


def token_bytes(tokenizer) -> torch.Tensor:
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits-per-byte.

    Byte-level BPE maps every byte to one printable character, so a token's byte count is
    the length of its token string; special tokens carry no text."""
    special = set(tokenizer.all_special_ids)
    counts = torch.zeros(len(tokenizer), dtype=torch.int64)
    for token, idx in tokenizer.get_vocab().items():
        counts[idx] = 0 if idx in special else len(token)
    return counts


def bits_per_byte(nll_sum_nats: float, n_bytes: int) -> float:
    return nll_sum_nats / (math.log(2) * max(n_bytes, 1))
