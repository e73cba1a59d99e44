"""Greedy answers of an exported vision-language model to questions about images: the one
generation path behind the ``vlm`` stage's held-out VQA and image tasks in ``kind: eval``.

Prompts are built exactly as training built them (bos, the whole ``<image>`` block, the chat
template's user turn and assistant header); images are decoded and normalised by the same
function the data pipeline uses; answers stop at the end-of-turn token.

    answerer = VLMAnswerer("forge_runs/demo-vlm/model")
    answerer.answer(["What colour is the square?"], ["images/00001.png"], root="demo-data/vlm")
"""

from __future__ import annotations

import json
from pathlib import Path

from forge_ray.vlm.presets import IMAGE_TOKEN


def is_vlm(model_dir: str | Path) -> bool:
    """Whether a model directory holds a LLaVA-layout model (read from its config only)."""
    config = Path(model_dir) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "llava"


class VLMAnswerer:
    """An exported VLM (or, with ``random_init_seed``, the same architecture untrained: the
    floor a trained one is read against) answering batches of image questions."""

    def __init__(self, model_dir: str | Path, random_init_seed: int | None = None, threads: int | None = None):
        import torch
        from transformers import AutoConfig, AutoTokenizer, LlavaForConditionalGeneration

        from forge_ray.compat.transformers import model_from_config

        if threads:
            torch.set_num_threads(threads)
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        if random_init_seed is None:
            self.model = LlavaForConditionalGeneration.from_pretrained(
                str(model_dir), use_safetensors=True, trust_remote_code=False, dtype=torch.float32)
        else:
            torch.manual_seed(random_init_seed)
            config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
            self.model = model_from_config(LlavaForConditionalGeneration, config, torch.float32)
        self.model.eval()
        vision = self.model.config.vision_config
        self.image_size = vision.image_size
        self.n_image_tokens = (vision.image_size // vision.patch_size) ** 2
        self.image_id = self.tok.convert_tokens_to_ids(IMAGE_TOKEN)
        self.stop_ids = [i for i in (self.tok.convert_tokens_to_ids("<|end|>"), self.tok.eos_token_id)
                         if isinstance(i, int) and i != self.tok.unk_token_id]

    def answer(self, questions: list[str], images: list | None, root: str | Path = ".", max_new_tokens: int = 8,
               batch_size: int = 32) -> list[str]:
        """One greedy answer per question; ``images`` (paths relative to ``root``, or bytes)
        pair with the questions; ``None``: text-only questions to the language model."""
        import torch

        from forge_ray.eval.model import left_pad
        from forge_ray.vlm.data import chat_prompt, load_image

        answers: list[str] = []
        for start in range(0, len(questions), batch_size):
            chunk = questions[start:start + batch_size]
            block = [self.image_id] * self.n_image_tokens if images is not None else []
            prompts = [[self.tok.bos_token_id] + block + chat_prompt(self.tok, q) for q in chunk]
            ids, mask = left_pad(prompts, self.tok.pad_token_id)
            extra = {}
            if images is not None:
                extra["pixel_values"] = torch.stack([
                    torch.from_numpy(load_image(img, str(root), self.image_size))
                    for img in images[start:start + batch_size]])
            with torch.no_grad():
                out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          do_sample=False, eos_token_id=self.stop_ids,
                                          pad_token_id=self.tok.pad_token_id, **extra)
            answers += [self.tok.decode(seq, skip_special_tokens=True).strip() for seq in out[:, ids.shape[1]:]]
        return answers
