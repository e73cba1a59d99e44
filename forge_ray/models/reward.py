"""Score (prompt, response) pairs with an exported reward model.

One class for every consumer: the RL stage runs it as a Ray actor (``reward_actor``),
evaluation uses it as a judge, tests check it against the scores seen in training. It
renders a pair exactly as reward-model training did (the tokenizer's chat template, user
turn then assistant turn, right-padded) and reads the HF model's own score, so a reward
model scores the same everywhere. Loading is safetensors-only, no remote code.

    from forge_ray.models.reward import RewardScorer
    RewardScorer("forge_runs/demo-rm/model").score(["Who leads Team Otter?"], ["Team Otter is led by …"])
"""

from __future__ import annotations

from pathlib import Path


class RewardScorer:
    def __init__(self, model_dir: str | Path, max_len: int = 1024, batch_size: int = 16, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), use_safetensors=True, trust_remote_code=False, dtype=torch.float32).to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_dir} is not a reward model: it has {self.model.config.num_labels} labels, not 1")
        self.max_len, self.batch_size, self.device = max_len, batch_size, device

    def encode(self, prompt: str, response: str) -> list[int]:
        ids = self.tok.apply_chat_template([{"role": "user", "content": prompt},
                                            {"role": "assistant", "content": response}],
                                           tokenize=True, return_dict=True)["input_ids"]
        return list(ids)[: self.max_len]

    def score_ids(self, rows: list[list[int]]) -> list[float]:
        """Scores of already tokenised rows (right-padded here with the pad token)."""
        import torch

        pad = self.tok.pad_token_id
        out: list[float] = []
        for i in range(0, len(rows), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk], device=self.device)
            with torch.no_grad():
                out += self.model(input_ids=ids, attention_mask=(ids != pad).long()).logits[:, 0].float().tolist()
        return out

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)])


def reward_actor(model_dir: str, num_cpus: float = 1, num_gpus: float = 0, options: dict | None = None, **kwargs):
    """A Ray actor serving :class:`RewardScorer` (``.score.remote(prompts, responses)``);
    ``options`` (Ray actor options, e.g. a placement-group bundle) replace the CPU/GPU counts."""
    import ray

    options = options or dict(num_cpus=num_cpus, num_gpus=num_gpus)
    device = "cuda" if options.get("num_gpus") else "cpu"
    return ray.remote(RewardScorer).options(**options).remote(model_dir, device=device, **kwargs)
