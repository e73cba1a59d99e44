"""A tiny vision-language model trained once on the demo's generated shapes (visual
instructions, `jobs/configs/tiny/vlm.yaml`'s recipe): it must answer held-out questions about
unseen images far above chance, and its export must reload in `transformers` — weights,
tokenizer and image processor — computing the training model's logits."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch
import torch

from forge_ray import api
from forge_ray.demo.images import CHANCE
from tests.conftest import read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm(ray_connected, demo_runs, demo_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("vlm-runs")
    shutil.copytree(demo_runs / "demo-tokenizer", storage / "demo-tokenizer")
    spec = api.resolve("jobs/configs/tiny/vlm.yaml", ["tokenizer=demo-tokenizer",
                                                      f"data=[{demo_data}/vlm/vqa_train.jsonl]",
                                                      f"eval_vqa={demo_data}/vlm/vqa_eval.jsonl"])
    api.run(spec, storage=str(storage), show_progress=False)
    return storage / "tiny-vlm"


def test_held_out_visual_questions_are_answered_far_above_chance(vlm):
    metrics = read_json(vlm / "manifest.json")["metrics"]
    assert metrics["val_loss"] < metrics["start_val_loss"] - 1.0
    # colour, shape and side each far above chance on their own (counting is harder: not asserted)
    for kind in ("colour", "shape", "side"):
        assert metrics[f"vqa_accuracy_{kind}"] >= CHANCE[kind] + 0.3, (kind, metrics)
    assert metrics["vqa_accuracy"] >= 0.6 and metrics["vqa_items"] == 320
    items = [json.loads(line) for line in (vlm / "vqa.jsonl").read_text().splitlines()]
    assert sum(i["correct"] for i in items) / len(items) == pytest.approx(metrics["vqa_accuracy"])


def test_export_reloads_with_transformers_and_gives_the_training_logits(vlm, demo_data):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(vlm / "model", use_safetensors=True).eval()
    probe = safetensors.torch.load_file(vlm / "export_probe.safetensors")
    assert (probe["input_ids"] == model.config.image_token_id).sum(1).tolist() == [16, 16]  # the image block, whole
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"], pixel_values=probe["pixel_values"]).logits
    torch.testing.assert_close(logits, probe["logits"], rtol=1e-5, atol=1e-5)
    processor = AutoProcessor.from_pretrained(vlm / "model")  # a user's way in: image + prompt → model inputs
    from PIL import Image

    from forge_ray.vlm.data import load_image

    sample = json.loads((vlm / "vqa.jsonl").read_text().splitlines()[0])
    path = demo_data / "vlm" / sample["image"]
    inputs = processor(images=Image.open(path), text="<image>" + sample["question"], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 16
    torch.testing.assert_close(inputs["pixel_values"][0], torch.from_numpy(load_image(path, "", 32)), rtol=0, atol=1e-5)
