"""Image+text rows → fixed-length training rows with their pixels, through Ray Data.

A source row is ``{"image": path-or-bytes, "text": caption}`` (captioning) or
``{"image": …, "question": …, "answer": …}`` (visual instructions); image paths are relative
to the JSONL file. ``map_batches`` decodes and resizes images with Pillow (no torchvision) and
tokenizes. Every row has the layout

    [bos] [image] × N  prompt…  target… [eos] [pad]…

where N is the vision encoder's patch count: the placeholder is expanded to exactly the
tokens the projector fills. Truncation only ever shortens the *text* (target last), so the
image block survives whole — a row whose target would not fit at all is dropped and counted,
never trained on with its image cut. ``loss_mask`` is 1 only on target tokens and the eos:
not on bos, image, prompt or padding.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from forge_ray.allowed_paths import require_allowed

MEAN = STD = 0.5  # the image processor's normalisation (SigLIP-style), saved with the export


def load_image(image, root: str, size: int) -> np.ndarray:
    """[3, size, size] float32, normalised; ``image`` is a path (relative to ``root``) or bytes."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        img = Image.open(io.BytesIO(image))
    else:
        path = Path(image) if Path(image).is_absolute() else Path(root) / image
        require_allowed(str(path), "image")
        img = Image.open(path)
    img = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1).copy()


def encode_example(prompt_ids: list[int], target_ids: list[int], *, bos_id: int, eos_id: int, pad_id: int,
                   image_token_id: int, n_image_tokens: int, seq_len: int) -> dict | None:
    """One row (lists of ``seq_len``), or None when not even one target token fits."""
    room = seq_len - 1 - n_image_tokens  # what is left for text after bos + the whole image block
    if room < 2:
        raise ValueError(f"seq_len={seq_len} leaves no room for text after {n_image_tokens} image tokens")
    prompt = prompt_ids[:room - 1]  # at least one target token must stay
    target = (list(target_ids) + [eos_id])[:room - len(prompt)]
    if not target:
        return None
    ids = [bos_id] + [image_token_id] * n_image_tokens + prompt + target
    mask = [0] * (1 + n_image_tokens + len(prompt)) + [1] * len(target)
    real = len(ids)
    pad = seq_len - real
    return {"input_ids": ids + [pad_id] * pad, "loss_mask": mask + [0] * pad,
            "segment_ids": [1] * real + [0] * pad, "position_ids": list(range(real)) + [0] * pad}


class EncodeBatch:
    """``map_batches`` callable: decode the images and tokenize the text of a batch of rows."""

    def __init__(self, tokenizer_dir: str, image_token: str, n_image_tokens: int, image_size: int, seq_len: int,
                 phase: str):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.ids = dict(bos_id=self.tok.bos_token_id, eos_id=self.tok.eos_token_id, pad_id=self.tok.pad_token_id,
                        image_token_id=self.tok.convert_tokens_to_ids(image_token), n_image_tokens=n_image_tokens,
                        seq_len=seq_len)
        self.image_size, self.phase = image_size, phase

    def prompt_and_target(self, row: dict) -> tuple[list[int], list[int]]:
        if self.phase == "caption":
            return [], self.tok.encode(str(row["text"]), add_special_tokens=False)
        prompt = chat_prompt(self.tok, str(row["question"]))
        return prompt, self.tok.encode(str(row["answer"]) + "<|end|>", add_special_tokens=False)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in ("input_ids", "loss_mask", "segment_ids", "position_ids",
                                                "pixel_values")}
        for i in range(len(batch["image"])):
            row = {k: batch[k][i] for k in batch}
            encoded = encode_example(*self.prompt_and_target(row), **self.ids)
            if encoded is None:
                continue
            for k, v in encoded.items():
                out[k].append(np.asarray(v, dtype=np.int32))
            out["pixel_values"].append(load_image(row["image"], row["_root"], self.image_size).reshape(-1))
        return out


def chat_prompt(tokenizer, question: str) -> list[int]:
    """The user turn and the assistant header, as the chat template renders them."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def prepare(sources: list[dict], out_dir: Path, val_fraction: float, **encode) -> dict:
    """Read JSONL sources with Ray Data, encode, split by image (all questions about one image
    fall on the same side), write ``train/`` and ``val/`` Parquet; returns counts."""
    import hashlib

    import ray.data

    def tag(root: str):
        return lambda row: {**row, "_root": root}

    datasets = [ray.data.read_json(s["path"]).map(tag(str(Path(s["path"]).parent))) for s in sources]
    ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]

    def is_val(row) -> bool:
        key = row["image"] if isinstance(row["image"], str) else hashlib.sha256(row["image"]).hexdigest()
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8 < val_fraction

    counts = {}
    for split, keep in (("train", lambda r: not is_val(r)), ("val", is_val)):
        part = ds.filter(keep).map_batches(EncodeBatch, fn_constructor_kwargs=encode, batch_size=64,
                                           compute=ray.data.ActorPoolStrategy(size=1), batch_format="numpy")
        rows = part.count()
        counts[f"{split}_rows"] = rows
        if rows:
            part.repartition(1).write_parquet(str(out_dir / split))
    return counts
