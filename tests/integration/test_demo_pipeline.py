"""The demo pipeline end to end (what `make demo` runs): every stage succeeds with its
lineage; pre-training and SFT learn; SFT answers held-out facts (entities no post-training
data mentions) far better than the pre-trained-only and the untrained model, and far better
after augmentation than the same recipe on the documents as they are; DPO raises
held-out preference accuracy from chance and widens its reward margin; the reward model
beats chance on held-out pairs and scores the same after export; GRPO (checked in
test_rl.py) raises the held-out reward."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from tests.conftest import read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(demo_runs):
    return demo_runs


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_stage_succeeded_with_lineage(demo):
    pipe = read_json(demo / "demo" / "manifest.json")
    assert [s["status"] for s in pipe["stages"]] == ["succeeded"] * len(pipe["stages"]) and len(pipe["stages"]) == 17
    assert read_json(demo / "demo-sft" / "manifest.json")["parents"] == ["demo-pretrain", "demo-sft-data"]
    assert read_json(demo / "demo-sft-plain" / "manifest.json")["parents"] == ["demo-pretrain-plain", "demo-sft-data"]
    assert read_json(demo / "demo-corpus" / "manifest.json")["parents"] == ["demo-augmented", "demo-tokenizer"]
    assert set(read_json(demo / "demo-pretrain" / "manifest.json")["parents"]) == {"demo-corpus", "demo-tokenizer"}
    for run in ("demo-dpo", "demo-rm"):
        assert sorted(read_json(demo / run / "manifest.json")["parents"]) == ["demo-prefs", "demo-sft"]
    assert read_json(demo / "demo-grpo" / "manifest.json")["parents"] == ["demo-sft"]


def test_sft_answers_held_out_facts_beyond_pretraining_alone(demo):
    """Both trainings learned; on the same 190 held-out questions SFT answers more than its
    pre-trained parent, paired item by item. How much more varies from run to run (the
    pre-trained model's chat answers are a fragile by-product: 0.06–0.31 over five runs, SFT
    0.38–0.49; README, Evaluation), so the claim is the paired comparison, not a margin."""
    for run, drop in (("demo-pretrain", 3.0), ("demo-sft", 0.5)):
        m = read_json(demo / run / "manifest.json")["metrics"]
        assert m["first_loss"] - m["loss"] > drop, (run, m["first_loss"], m["loss"])
    report = read_json(demo / "demo-eval" / "report" / "results.json")
    facts = report["tasks"]["held-out-facts"]
    untrained, pretrained, sft = (facts[m] for m in ("random:demo-pretrain", "demo-pretrain", "demo-sft"))
    print(f"held-out fact QA: untrained {untrained['score']:.2f}, pre-trained {pretrained['score']:.2f}, "
          f"SFT {sft['score']:.2f} ({sft['n']} questions)")
    assert sft["n"] == pretrained["n"] == untrained["n"] == 190
    assert untrained["score"] < 0.1 and sft["ci"][0] > untrained["ci"][1]
    [paired] = [r for r in report["pairwise"]["reference"]
                if r["task"] == "held-out-facts" and (r["a"], r["b"]) == ("demo-pretrain", "demo-sft")]
    assert paired["ci"][1] < 0.5, paired  # the pre-trained model's win rate against SFT: wholly below even


def test_augmentation_makes_held_out_facts_extractable(demo):
    """The demo-eval's closed-book rows: the augmented recipe above the same recipe on the
    documents as they are, beyond both intervals (190 questions about held-out entities)."""
    report = read_json(demo / "demo-eval" / "report" / "results.json")
    facts = report["tasks"]["held-out-facts"]
    aug, plain = facts["demo-sft"], facts["demo-sft-plain"]
    print(f"held-out facts closed-book: plain {plain['score']:.3f} {plain['ci']}, augmented {aug['score']:.3f} "
          f"{aug['ci']}; + rag: {facts['demo-sft + rag']['score']:.3f}, {facts['demo-sft-plain + rag']['score']:.3f}")
    assert aug["n"] == plain["n"] == 190
    assert aug["ci"][0] > plain["ci"][1], (aug, plain)
    report_md = (demo / "demo-augmented" / "report" / "report.md").read_text()
    augmented = read_json(demo / "demo-augmented" / "manifest.json")["metrics"]
    assert augmented["records"] == 260 and augmented["permute_rows"] > 0 and augmented["render_rows"] > 0
    assert "| render |" in report_md


def test_dpo_raises_held_out_preference_accuracy_and_margin(demo):
    m = read_json(demo / "demo-dpo" / "manifest.json")["metrics"]
    assert m["start_val_accuracy"] == 0.5 and m["start_val_margin"] == 0.0  # policy = reference: all ties
    assert m["val_accuracy"] >= 0.75 and m["val_margin"] > 0, m
    steps = [r for r in _rows(demo / "demo-dpo" / "metrics.jsonl") if "reward_margin" in r]
    early = sum(r["reward_margin"] for r in steps[:5]) / 5
    late = sum(r["reward_margin"] for r in steps[-5:]) / 5
    assert late > early + 0.5, (early, late)
    assert all(key in steps[-1] for key in ("reward_chosen", "reward_rejected", "accuracy", "kl_chosen"))


def test_reward_model_beats_chance_and_scores_the_same_after_export(demo, demo_data):
    from forge_ray.models.reward import RewardScorer

    m = read_json(demo / "demo-rm" / "manifest.json")["metrics"]
    print(f"reward model held-out pairwise accuracy {m['start_val_accuracy']:.2f} → {m['val_accuracy']:.2f}")
    assert m["val_accuracy"] >= 0.65, m
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(demo / "demo-rm" / "model")
    assert config.architectures == ["LlamaForSequenceClassification"] and config.num_labels == 1

    scorer = RewardScorer(demo / "demo-rm" / "model")
    probe = safetensors.torch.load_file(demo / "demo-rm" / "export_probe.safetensors")  # scores in training
    rows = [[t for t in row.tolist() if t != scorer.tok.pad_token_id] for row in probe["input_ids"]]
    torch.testing.assert_close(torch.tensor(scorer.score_ids(rows)), probe["logits"][:, 0], rtol=1e-4, atol=1e-4)
    pairs = _rows(demo_data / "prefs.jsonl")
    rendered = [scorer.encode(p["prompt"], p["chosen"]) for p in pairs]
    assert all(row in rendered for row in rows)  # the scorer renders a pair exactly as training did
    chosen = scorer.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = scorer.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(pairs) > 0.8  # mostly its training pairs
