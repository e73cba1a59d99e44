"""Turning rollouts into training tensors: batch layout and per-token log-probs.

Layout: each row is ``prompt + response`` right-padded with the pad token, so positions
are plain ``0…L-1`` and causal attention never sees padding from a real token. Per-token
tensors live on the *targets* axis (length ``L-1``: target ``t`` is token ``t+1``), and
``response_mask`` marks the targets that are response tokens — the only ones the policy,
value and KL terms count. The advantage estimators in :mod:`forge_ray.rl.algos` take these
tensors as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RolloutBatch:
    sequences: torch.Tensor  # [B, L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, L] 1 on real tokens
    response_mask: torch.Tensor  # [B, L-1] 1 where target t (token t+1) is a response token


def pack_rollouts(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> RolloutBatch:
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    rows = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    width = max(len(r) for r in rows)
    sequences = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response = torch.zeros((len(rows), width - 1), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        n = len(p) + len(r)
        sequences[i, :n] = torch.tensor(rows[i])
        attention[i, :n] = 1
        response[i, len(p) - 1:n - 1] = 1  # targets len(p)…n-1 are the response tokens
    return RolloutBatch(sequences, attention, response)


def token_logps(model, sequences: torch.Tensor, attention_mask: torch.Tensor,
                return_entropy: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every next token under ``model``: ``[B, L-1]`` (fp32), optionally with the
    per-token entropy of the model's distribution."""
    logits = model(input_ids=sequences, attention_mask=attention_mask).logits[:, :-1].float()
    logp = torch.gather(logits.log_softmax(-1), 2, sequences[:, 1:].unsqueeze(-1)).squeeze(-1)
    if not return_entropy:
        return logp
    from forge_ray.rl.algos.losses import entropy

    return logp, entropy(logits)


def engine_logps(prompt_ids: list[list[int]], samples: list, width: int) -> torch.Tensor:
    """The rollout engine's log-prob of every response token, on the targets axis of
    :func:`pack_rollouts` (``[B, width]``, zero elsewhere): response token ``j`` of row ``i``
    is target ``len(prompt_i) − 1 + j``."""
    out = torch.zeros((len(samples), width), dtype=torch.float32)
    for i, (p, s) in enumerate(zip(prompt_ids, samples)):
        if s.logprobs:
            out[i, len(p) - 1:len(p) - 1 + len(s.logprobs)] = torch.tensor(s.logprobs, dtype=torch.float32)
    return out
