"""Imported open models of other families through the real stages: a tiny random-weight Gemma 3
(sliding-window layers, soft-caps, tied embeddings, Gemma's chat template) and a tiny
Qwen3-MoE (query/key norms, routed experts on the grouped kernel, ChatML), each with its own
tokenizer, imported with `forge import`, then continued pre-training on the demo documents
(validation loss falls) and LoRA SFT on the demo conversations through the model's own
template (no generation markers: the assistant tokens are found by rendering), exported, and
greedy decoding in vLLM equal to transformers'. The per-family seams themselves (masks,
logits, LoRA targets, import) are unit-tested for every family in tests/unit/test_families.py."""

from __future__ import annotations

import json

import pytest
import torch

from forge_ray import api
from forge_ray.models.families import family_of, tiny_config
from tests.chat_templates import CHATML, GEMMA, SPECIAL
from tests.conftest import forge, read_json
from tests.time_limits import limited

pytestmark = pytest.mark.slow
#: family → (chat template, bos, end of turn)
FAMILIES = {"gemma3": (GEMMA, "<bos>", "<end_of_turn>"), "qwen3_moe": (CHATML, None, "<|im_end|>")}


def _tokenizer(demo_data, template: str, bos: str | None, end: str):
    """A byte-level BPE trained on the demo documents, with the family's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [p.read_text() for p in sorted((demo_data / "docs").rglob("*.md"))]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=768, special_tokens=["<pad>", *SPECIAL],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=end, pad_token="<pad>",
                                   chat_template=template)


@pytest.fixture(scope="module")
def family_runs(ray_connected, demo_data, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    storage = tmp_path_factory.mktemp("family-runs")
    stages = []
    for family, (template, bos, end) in FAMILIES.items():
        src = tmp_path_factory.mktemp(f"their-{family}")
        tok = _tokenizer(demo_data, template, bos, end)
        torch.manual_seed(0)
        ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
               "bos_token_id": tok.bos_token_id if bos else tok.eos_token_id}
        AutoModelForCausalLM.from_config(tiny_config(family, vocab_size=len(tok), **ids)).save_pretrained(src)
        tok.save_pretrained(src)
        out = forge("import", str(src), "--name", f"{family}-import", "--storage", str(storage))
        assert out.returncode == 0, out.stderr[-2000:]
        stages += [
            {"kind": "pretrain", "name": f"{family}-cpt", "init_from": f"{family}-import", "tokenizer": f"{family}-import",
             "data": [{"path": str(demo_data / "docs")}], "optim": {"lr": 3e-3, "warmup_steps": 2},
             "train": {"max_steps": 16, "micro_batch_size": 4, "seq_len": 128, "eval_every": 16, "eval_batches": 2,
                       "checkpoint_every": 0}, "resources": {"num_workers": 1}},
            {"kind": "sft", "name": f"{family}-sft", "base": f"{family}-cpt",
             "data": [{"path": str(demo_data / "sft.jsonl"), "format": "chat"}], "lora": {"enabled": True, "rank": 4},
             "optim": {"lr": 5e-3, "warmup_steps": 1},
             "train": {"max_steps": 8, "micro_batch_size": 4, "seq_len": 128, "eval_every": 0, "checkpoint_every": 0},
             "resources": {"num_workers": 1}}]
    api.run({"kind": "pipeline", "name": "families", "stages": stages}, storage=str(storage), show_progress=False)
    return storage


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_continued_pretraining_of_an_imported_family_lowers_validation_loss(family_runs, family):
    assert read_json(family_runs / f"{family}-import" / "manifest.json")["family"] == family
    m = read_json(family_runs / f"{family}-cpt" / "manifest.json")
    assert m["status"] == "succeeded" and f"{family}-import" in m["parents"]
    start, end = m["metrics"]["start_val_loss"], m["metrics"]["val_loss"]
    print(f"{family}: continued pre-training val loss {start:.3f} → {end:.3f}")
    assert end < start - 0.05, (start, end)  # the yardstick of the Llama import test (test_serve_import)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lora_sft_trains_on_the_assistant_turns_of_the_models_own_template(family_runs, family):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    run = family_runs / f"{family}-sft"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and all(x == x and x > 0 for x in losses)  # a mask of zeros would give no loss at all
    assert losses[-1] < losses[0], losses
    config = AutoConfig.from_pretrained(run / "model")
    assert family_of(config).name == family
    model = AutoModelForCausalLM.from_pretrained(run / "model", use_safetensors=True).eval()
    probe = load_file(run / "export_probe.safetensors")  # the live (adapter) model's logits at export
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=probe["input_ids"]).logits, probe["logits"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_exported_family_decodes_in_vllm_as_in_transformers(family_runs, family):
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forge_ray.rl.rollout.vllm_engine import VLLMEngine

    model_dir = family_runs / f"{family}-sft" / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for q in ("Who leads Team Otter?", "What is")]
    expected = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=None)
            expected.append(out[0, len(p):].tolist())
    engine = VLLMEngine.options(num_cpus=1).remote(str(model_dir))
    try:
        with limited(600) as limit_s:  # the engine's start (vLLM on CPU) and 2 greedy answers
            got = ray.get(engine.generate.remote(prompts, max_tokens=10, stop_token_ids=[]), timeout=limit_s)
    finally:
        ray.kill(engine)
    assert [g[0] for g in got] == expected
