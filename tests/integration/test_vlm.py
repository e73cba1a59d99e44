"""The demo pipeline's vision-language model (`jobs/configs/demo.yaml`): the ViT and projector
learn to caption generated shapes with the pre-trained language model frozen (`demo-vlm-caption`),
then the whole model learns visual instructions (`demo-vlm`). It must answer held-out questions
about unseen images far above chance, in its own run and in the demo's evaluation report (by
question type, against the untrained architecture), and its export must reload in
`transformers` — weights, tokenizer and image processor — computing the training model's logits."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from forge_ray.demo.images import CHANCE
from tests.conftest import read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vlm(demo_runs):
    return demo_runs / "demo-vlm"


def test_held_out_visual_questions_are_answered_far_above_chance(vlm):
    metrics = read_json(vlm / "manifest.json")["metrics"]
    assert metrics["val_loss"] < metrics["start_val_loss"] - 1.0
    for kind in ("colour", "shape", "side", "count"):
        assert metrics[f"vqa_accuracy_{kind}"] >= CHANCE[kind] + 0.3, (kind, metrics)
    assert metrics["vqa_accuracy"] >= 0.8 and metrics["vqa_items"] == 320
    items = [json.loads(line) for line in (vlm / "vqa.jsonl").read_text().splitlines()]
    assert sum(i["correct"] for i in items) / len(items) == pytest.approx(metrics["vqa_accuracy"])


def test_captions_first_with_the_language_model_frozen_then_instructions(vlm, demo_runs):
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    caption = demo_runs / "demo-vlm-caption"
    assert read_json(vlm / "manifest.json")["parents"] == ["demo-tokenizer", "demo-vlm-caption"]
    assert {"demo-pretrain", "demo-tokenizer"} <= set(read_json(caption / "manifest.json")["parents"])
    lm = AutoModelForCausalLM.from_pretrained(demo_runs / "demo-pretrain" / "model", use_safetensors=True)
    captioner = LlavaForConditionalGeneration.from_pretrained(caption / "model", use_safetensors=True)
    inner = captioner.model.language_model.state_dict()
    for name, weight in lm.model.state_dict().items():  # frozen: the pre-trained weights, unchanged
        got = inner[name][:weight.shape[0]] if name == "embed_tokens.weight" else inner[name]
        torch.testing.assert_close(got, weight, rtol=0, atol=0, msg=name)
    vision_before = captioner.model.vision_tower.state_dict()
    vision_after = LlavaForConditionalGeneration.from_pretrained(vlm / "model", use_safetensors=True).model.vision_tower
    assert any(not torch.equal(vision_before[k], v) for k, v in vision_after.state_dict().items())


def test_the_demo_report_scores_visual_questions_by_type(demo_runs):
    results = read_json(demo_runs / "demo-vqa" / "report" / "results.json")
    trained, untrained = results["tasks"]["vqa"]["demo-vlm"]["score"], results["tasks"]["vqa"]["random:demo-vlm"]["score"]
    assert trained >= 0.8 and untrained <= 0.1, (trained, untrained)
    assert set(results["by_type"]["vqa"]) == {"colour", "shape", "side", "count"}
    run_metrics = read_json(demo_runs / "demo-vlm" / "manifest.json")["metrics"]
    assert results["tasks"]["vqa"]["demo-vlm"]["score"] == pytest.approx(run_metrics["vqa_accuracy"])
    assert "vqa by question type" in (demo_runs / "demo-vqa" / "report" / "report.md").read_text()


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
