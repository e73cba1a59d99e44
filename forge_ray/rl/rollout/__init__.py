"""Rollout engines (vLLM, HF fallback) and what they share: the sample they return, the
weight-sync payload and the stop-string cut."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One sampled response: its tokens, the engine's log-prob of each (at temperature 1,
    before top-p — the distribution the trainer scores), and the version of the weights
    that sampled it (the count of weight updates the engine had received)."""

    tokens: list[int]
    logprobs: list[float] = field(default_factory=list)
    version: int = 0

    def cut(self, n: int) -> Sample:
        return Sample(self.tokens[:n], self.logprobs[:n], self.version)


def weights_blob(state_dict: dict) -> bytes:
    """A safetensors blob of a state dict for ``update_weights``. Tensors that share storage
    (tied input/output embeddings) are sent once, under their first name: safetensors refuses
    shared tensors, and both engines re-tie them on load."""
    import safetensors.torch

    seen: set[tuple[int, int]] = set()
    unique = {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        unique[name] = tensor.detach().contiguous()
    return safetensors.torch.save(unique)


def stop_length(tokens: list[int], stop: list[str], decode) -> int:
    """How many of ``tokens`` to keep: up to and including the one whose text completes the
    first stop string (all of them if none occurs)."""
    if not stop or not any(s in decode(tokens) for s in stop):
        return len(tokens)
    for end in range(1, len(tokens) + 1):
        if any(s in decode(tokens[:end]) for s in stop):
            return end
    return len(tokens)


def cut_at_stop(tokens: list[int], stop: list[str], decode) -> list[int]:
    """``tokens`` cut after the first stop string: the same cut whichever engine generated them."""
    return tokens[:stop_length(tokens, stop, decode)]
