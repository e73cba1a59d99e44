"""VLM rows: the image block survives truncation whole, the loss mask covers only the
target (never bos, image or prompt tokens), and a decoded batch feeds the LLaVA model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forge_ray.vlm.data import encode_example

IDS = dict(bos_id=1, eos_id=2, pad_id=0, image_token_id=99, n_image_tokens=16)


def test_long_text_is_cut_but_never_the_image_tokens():
    prompt, target = list(range(10, 40)), list(range(40, 80))  # 70 text tokens into a 32-token row
    row = encode_example(prompt, target, seq_len=32, **IDS)
    ids, mask = row["input_ids"], row["loss_mask"]
    assert len(ids) == 32 and ids[0] == 1 and ids[1:17] == [99] * 16  # the whole image block, first
    assert ids.count(99) == 16
    assert sum(mask) >= 1 and mask[:17] == [0] * 17  # at least one target token kept; none of bos/image
    kept_prompt = [t for t in ids[17:] if 10 <= t < 40]
    assert all(m == 0 for t, m in zip(ids, mask) if 10 <= t < 40) and kept_prompt == prompt[:len(kept_prompt)]


def test_mask_covers_exactly_target_and_eos_and_padding_is_inert():
    row = encode_example([10, 11, 12], [40, 41], seq_len=40, **IDS)
    ids, mask, seg = row["input_ids"], row["loss_mask"], row["segment_ids"]
    real = 1 + 16 + 3 + 2 + 1
    assert ids[:real] == [1] + [99] * 16 + [10, 11, 12, 40, 41, 2] and ids[real:] == [0] * (40 - real)
    assert [i for i, m in enumerate(mask) if m] == [real - 3, real - 2, real - 1]  # 40, 41, eos
    assert seg == [1] * real + [0] * (40 - real) and row["position_ids"][:real] == list(range(real))


def test_a_row_too_short_for_any_text_is_refused():
    with pytest.raises(ValueError, match="no room for text after 16 image tokens"):
        encode_example([10], [40], seq_len=18, **IDS)


def test_decoded_demo_batch_trains_a_tiny_llava(tmp_path):
    """Pillow-decoded demo images and chat-formatted questions through the model and the
    objective: a finite loss, gradients reaching the vision tower through the projector."""
    from types import SimpleNamespace

    import torch

    from forge_ray.demo.images import write_demo_images
    from forge_ray.models.registry import resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train.job import TokenIds, TrainJob, VisionInputs
    from forge_ray.vlm.data import EncodeBatch
    from forge_ray.vlm.model import IMAGE_TOKEN, VISION_PRESETS, build_vlm
    from forge_ray.vlm.objective import VLMObjective

    write_demo_images(tmp_path / "vlm", n_train=8, n_eval=0)
    rows = [json.loads(x) for x in (tmp_path / "vlm" / "vqa_train.jsonl").read_text().splitlines()[:6]]
    tok = _tiny_chat_tokenizer(tmp_path / "tok")
    enc = EncodeBatch(str(tmp_path / "tok"), IMAGE_TOKEN, 16, 32, 48, "instruct")
    batch = enc({"image": np.array([r["image"] for r in rows]), "question": np.array([r["question"] for r in rows]),
                 "answer": np.array([r["answer"] for r in rows]), "_root": np.array([str(tmp_path / "vlm")] * 6)})
    assert len(batch["input_ids"]) == 6 and batch["pixel_values"][0].shape == (3 * 32 * 32,)
    job = TrainJob(spec=SimpleNamespace(seed=0, name="vlm"), storage=str(tmp_path), train_files=[], val_files=[],
                   tokenizer_dir=str(tmp_path / "tok"), token_ids=TokenIds.of(tok), arch=resolve(ModelSpec(preset="tiny")),
                   flops_per_token=0.0, vlm=VisionInputs(VISION_PRESETS["tiny"], tok.convert_tokens_to_ids(IMAGE_TOKEN)))
    objective = VLMObjective(build_vlm(job))
    tensors = {k: torch.as_tensor(np.stack(batch[k]), dtype=torch.float32 if k == "pixel_values" else torch.long)
               for k in objective.batch_keys}
    loss = objective(**tensors)
    loss.backward()
    assert torch.isfinite(loss) and objective.stats["targets"] == sum(int(m.sum()) for m in batch["loss_mask"])
    patches = [p.grad for n, p in objective.model.named_parameters() if "vision_tower" in n and "patch_embedding" in n]
    assert patches and all(g is not None and g.abs().sum() > 0 for g in patches)


def _tiny_chat_tokenizer(out):
    """Our tokenizer trainer (special tokens, chat template) on a few lines, plus <image>."""
    from transformers import AutoTokenizer

    from forge_ray.spec.stages import TokenizerStage
    from forge_ray.tokenizer.train import train_tokenizer
    from forge_ray.vlm.stage import _add_image_token

    spec = TokenizerStage(kind="tokenizer", name="t", sources=[], vocab_size=300, min_frequency=1, heldout_fraction=0)
    text = "What colour shape how many which side are the shapes? red green blue yellow square circle triangle"
    train_tokenizer(spec, iter([{"text": text, "id": str(i)} for i in range(50)]), out)
    tok = _add_image_token(AutoTokenizer.from_pretrained(str(out)))
    tok.save_pretrained(str(out))
    return tok
