"""The fallback rollout engine: HF ``generate`` behind the same interface as
:class:`~forge_ray.rl.rollout.vllm_engine.VLLMEngine` (``sample`` → a :class:`Sample` per
response, ``generate`` → token ids, ``update_weights`` from a safetensors blob), for machines
without vLLM or when chosen explicitly (``rollout.backend: hf``). Slower, but the same
controller drives it.

    engine = HFEngine(model_dir)                      # in-process
    actor = ray.remote(HFEngine).remote(model_dir)    # as a rollout actor
"""

from __future__ import annotations

from forge_ray.rl.rollout import Sample


class HFEngine:
    def __init__(self, model_dir: str, seed: int = 0, device: str = "cpu", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                          dtype=torch.float32).to(device).eval()
        self.eos_id = self.model.config.eos_token_id
        self.device, self.batch_size, self.model_dir, self.tokenizer = device, batch_size, model_dir, None
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.version = 0  # weight updates received

    def sample(self, prompt_token_ids: list[list[int]], max_tokens: int = 32, temperature: float = 0.0,
               top_p: float = 1.0, n: int = 1, stop_token_ids: list[int] | None = None,
               stop: list[str] | None = None, seed: int | None = None) -> list[list[Sample]]:
        """``n`` completions per prompt, each cut after its first stop token
        (``stop_token_ids=None``: the eos token; ``[]``: never stop early) or after the token
        that completes a ``stop`` string, with each token's log-prob. ``seed`` restarts the
        sampler (reproducible calls)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        stops = [self.eos_id] if stop_token_ids is None else list(stop_token_ids)
        done = self._stop_check(stop)
        return [[self._sample(ids, max_tokens, temperature, top_p, stops, done) for _ in range(n)]
                for ids in prompt_token_ids]

    def generate(self, prompt_token_ids: list[list[int]], **kwargs) -> list[list[list[int]]]:
        """Token ids of the completions :meth:`sample` draws (same arguments)."""
        return [[s.tokens for s in samples] for samples in self.sample(prompt_token_ids, **kwargs)]

    def _stop_check(self, stop: list[str] | None):
        """``tokens -> bool``: whether the text so far contains a stop string (None: no strings)."""
        if not stop:
            return None
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        return lambda tokens: any(s in self.tokenizer.decode(tokens, skip_special_tokens=True) for s in stop)

    def _sample(self, ids: list[int], max_tokens: int, temperature: float, top_p: float, stops: list[int],
                done=None) -> Sample:
        """One completion with a KV cache; sampling with this engine's seeded generator."""
        import torch

        generated: list[int] = []
        logprobs: list[float] = []
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            for _ in range(max_tokens):
                logits = out.logits[0, -1].float()
                if temperature == 0:
                    token = int(logits.argmax())
                else:
                    probs = (logits / temperature).softmax(-1)
                    if top_p < 1.0:
                        sorted_p, order = probs.sort(descending=True)
                        keep = sorted_p.cumsum(-1) - sorted_p < top_p
                        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
                        probs = probs / probs.sum()
                    token = int(torch.multinomial(probs, 1, generator=self.generator))
                generated.append(token)
                logprobs.append(float(logits.log_softmax(-1)[token]))
                if token in stops or (done is not None and done(generated)):
                    break
                out = self.model(input_ids=torch.tensor([[token]], device=self.device),
                                 past_key_values=out.past_key_values, use_cache=True)
        return Sample(generated, logprobs, self.version)

    def update_weights(self, blob: bytes, version: int | None = None) -> int:
        """Replace (some of) the weights in place from a safetensors blob."""
        import safetensors.torch

        tensors = safetensors.torch.load(bytes(blob))
        missing = set(tensors) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"weights not in the rollout model: {sorted(missing)[:5]}")
        self.model.load_state_dict(tensors, strict=False)
        self.version = self.version + 1 if version is None else version
        return len(tensors)

    def sleep(self) -> None:  # the engine interface; nothing to free on CPU
        pass

    def wake_up(self) -> None:
        pass
