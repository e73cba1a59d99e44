"""A vLLM ``LLM`` inside a Ray actor, with in-place weight updates through vLLM's public
extension points (``worker_extension_cls`` + ``collective_rpc`` + ``reload_weights``).

Why an actor: vLLM starts its engine core in a child process and wants a clean ``__main__``;
a Ray actor gives it one, places it with the same resources as any other role, and lets the
trainer push new weights without a restart.

    engine = VLLMEngine.options(num_cpus=1).remote(model_dir)
    ray.get(engine.generate.remote([[1, 2, 3]], max_tokens=16))   # greedy token ids

On GPUs: ``tensor_parallel`` spans whole GPUs (vLLM's Ray executor), ``sleep_mode`` frees the
GPU while a colocated policy trains, and weights arrive by NCCL broadcast
(:mod:`forge_ray.rl.rollout.nccl_sync`) instead of a blob.
"""

from __future__ import annotations

import os

import ray

from forge_ray.compat import vllm as vllm_compat
from forge_ray.rl.rollout import Sample


def _sampled_logprobs(completion) -> list[float]:
    """The log-prob of each sampled token from a completion asked for with ``logprobs=0``
    (vLLM returns the sampled token's entry at every position)."""
    return [float(step[token].logprob) for token, step in zip(completion.token_ids, completion.logprobs or [])]


class WeightSyncExtension:
    """Mixed into vLLM's worker: loads new weights in place, from a safetensors blob (CPU, or
    colocated) or from an NCCL broadcast by the policy's rank 0 (GPU, see ``nccl_sync``)."""

    def load_safetensors_blob(self, blob: bytes) -> int:
        import safetensors.torch

        tensors = safetensors.torch.load(bytes(blob))
        vllm_compat.reload_weights(self, tensors)
        vllm_compat.repack_cpu_weights(vllm_compat.worker_model(self))  # a tied lm_head keeps an old packed copy
        return len(tensors)

    def init_weight_group(self, host: str, port: int, first_rank: int, world_size: int) -> int:
        from vllm.distributed.parallel_state import get_tp_group

        from forge_ray.rl.rollout.nccl_sync import join_group

        rank = first_rank + get_tp_group().rank_in_group
        self.weight_group = join_group(host, port, rank, world_size, self.device)
        return rank

    def receive_weights(self, metas: list) -> int:
        from forge_ray.rl.rollout.nccl_sync import receive_into

        model = vllm_compat.worker_model(self)
        received = receive_into(self.weight_group, metas, self.device, model.load_weights)
        vllm_compat.repack_cpu_weights(model)  # no-op on GPUs (no packed CPU copies)
        return received


class VLLMRollout:
    """The engine itself (usable in any process that may start vLLM: a Ray task or actor)."""

    def __init__(self, model_dir: str, max_model_len: int = 512, kv_cache_gb: int = 1, seed: int = 0,
                 tensor_parallel: int = 1, sleep_mode: bool = False, gpu_memory_utilization: float = 0.9):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
        import torch
        from vllm import LLM

        gpu = torch.cuda.is_available()
        # tensor_parallel > 1: vLLM's Ray executor places its workers in this actor's placement group
        extra = dict(distributed_executor_backend="ray") if tensor_parallel > 1 else {}
        if gpu:
            extra.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=sleep_mode)
        self.sleep_mode = sleep_mode and gpu
        self.version = 0  # weight updates received
        self.llm = LLM(model=model_dir, dtype="bfloat16" if gpu else "float32", max_model_len=max_model_len,
                       enforce_eager=not gpu, seed=seed, trust_remote_code=False, tensor_parallel_size=tensor_parallel,
                       worker_extension_cls=f"{__name__}.WeightSyncExtension", **extra)

    def sample(self, prompt_token_ids: list[list[int]], max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, n: int = 1, stop_token_ids: list[int] | None = None,
               stop: list[str] | None = None, seed: int | None = None) -> list[list[Sample]]:
        """``n`` completions per prompt with the log-prob of each sampled token (vLLM's raw
        log-probs: temperature 1, before top-p, as the trainer scores them), ending with the
        token that completed a stop string, if one did (the caller cuts with
        :func:`~forge_ray.rl.rollout.stop_length`). ``seed``: prompt i samples with seed
        ``seed + i·n`` (vLLM gives its j-th sample ``+ j``), so the draws do not depend on how
        the engine batches requests."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        def for_prompt(i: int) -> SamplingParams:
            return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
                                  stop_token_ids=stop_token_ids or [], ignore_eos=stop_token_ids == [],
                                  stop=stop or None, include_stop_str_in_output=True, logprobs=0,
                                  seed=None if seed is None else seed + i * n)

        params = [for_prompt(i) for i in range(len(prompt_token_ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_token_ids], params,
                                    use_tqdm=False)
        return [[Sample(list(c.token_ids), _sampled_logprobs(c), self.version) for c in out.outputs]
                for out in outputs]

    def generate(self, prompt_token_ids: list[list[int]], **kwargs) -> list[list[list[int]]]:
        """Token ids of the completions :meth:`sample` draws (same arguments)."""
        return [[s.tokens for s in samples] for samples in self.sample(prompt_token_ids, **kwargs)]

    def init_weight_group(self, host: str, port: int, first_rank: int, world_size: int) -> list[int]:
        """Join the policy→engines NCCL group (every tensor-parallel worker of this engine)."""
        return self.llm.collective_rpc("init_weight_group", args=(host, port, first_rank, world_size))

    def receive_weights(self, metas: list, version: int | None = None) -> int:
        """Receive one broadcast of every parameter in ``metas`` (name, dtype, shape)."""
        received = self.llm.collective_rpc("receive_weights", args=(metas,))[0]
        self.llm.reset_prefix_cache()  # KV computed by the old weights
        self.version = self.version + 1 if version is None else version
        return received

    def sleep(self) -> None:
        """Free GPU memory (weights and KV cache) while a colocated policy trains."""
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()

    def close(self) -> None:
        """Stop the engine-core process now (a reused Ray worker would otherwise keep it)."""
        vllm_compat.shutdown_engine_core(self.llm)

    def update_weights(self, blob: bytes, version: int | None = None) -> int:
        """Replace weights in place from a safetensors blob (``safetensors.torch.save(state_dict)``).
        The prefix cache goes too: its KV blocks were computed by the old weights, and every
        rollout prompt shares the chat template's prefix."""
        loaded = sum(self.llm.collective_rpc("load_safetensors_blob", args=(blob,)))
        self.llm.reset_prefix_cache()
        self.version = self.version + 1 if version is None else version
        return loaded


VLLMEngine = ray.remote(VLLMRollout)  # the rollout actor: VLLMEngine.options(num_cpus=1).remote(model_dir)
