"""A vLLM ``LLM`` inside a Ray actor, with in-place weight updates through vLLM's public
extension points (``worker_extension_cls`` + ``collective_rpc`` + ``reload_weights``).

Why an actor: vLLM starts its engine core in a child process and wants a clean ``__main__``;
a Ray actor gives it one, places it with the same resources as any other role, and lets the
trainer push new weights without a restart.

    engine = VLLMEngine.options(num_cpus=1).remote(model_dir)
    ray.get(engine.generate.remote([[1, 2, 3]], max_tokens=16))   # greedy token ids
"""

from __future__ import annotations

import os

import ray


class WeightSyncExtension:
    """Mixed into vLLM's worker: loads a safetensors blob of (some of) the model's weights."""

    def load_safetensors_blob(self, blob: bytes) -> int:
        import safetensors.torch

        tensors = safetensors.torch.load(bytes(blob))
        self.model_runner.reload_weights(weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        return len(tensors)


@ray.remote
class VLLMEngine:
    def __init__(self, model_dir: str, max_model_len: int = 512, kv_cache_gb: int = 1, seed: int = 0):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
        from vllm import LLM

        import torch

        self.llm = LLM(model=model_dir, dtype="bfloat16" if torch.cuda.is_available() else "float32",
                       max_model_len=max_model_len, enforce_eager=True, seed=seed, trust_remote_code=False,
                       worker_extension_cls=f"{__name__}.WeightSyncExtension")

    def generate(self, prompt_token_ids: list[list[int]], max_tokens: int = 32, temperature: float = 0.0,
                 top_p: float = 1.0, n: int = 1, stop_token_ids: list[int] | None = None) -> list[list[list[int]]]:
        """Token ids of ``n`` completions per prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
                                stop_token_ids=stop_token_ids or [], ignore_eos=stop_token_ids == [])
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_token_ids], params,
                                    use_tqdm=False)
        return [[list(c.token_ids) for c in out.outputs] for out in outputs]

    def update_weights(self, blob: bytes) -> int:
        """Replace weights in place from a safetensors blob (``safetensors.torch.save(state_dict)``)."""
        return sum(self.llm.collective_rpc("load_safetensors_blob", args=(blob,)))
