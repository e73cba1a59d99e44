"""Rollout engines (vLLM, HF fallback) and what they share: the weight-sync payload and the
stop-string cut."""

from __future__ import annotations


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


def cut_at_stop(tokens: list[int], stop: list[str], decode) -> list[int]:
    """``tokens`` up to and including the one whose text completes the first stop string
    (all of them if none occurs): the same cut whichever engine generated the tokens."""
    if not stop or not any(s in decode(tokens) for s in stop):
        return tokens
    for end in range(1, len(tokens) + 1):
        if any(s in decode(tokens[:end]) for s in stop):
            return tokens[:end]
    return tokens
