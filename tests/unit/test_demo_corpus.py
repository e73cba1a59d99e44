"""The generated corpus: deterministic per seed, different across seeds, facts checkable."""

from __future__ import annotations

import json

from forge_ray.demo.corpus import write_demo_data


def _files(root):
    """Relative path → bytes, with the root itself written as ROOT (the lm-eval task names its
    data file by absolute path)."""
    return {p.relative_to(root).as_posix(): p.read_bytes().replace(str(root.resolve()).encode(), b"ROOT")
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    write_demo_data(tmp_path / "a", seed=7)
    write_demo_data(tmp_path / "b", seed=7)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_other_seed_gives_other_facts(tmp_path):
    write_demo_data(tmp_path / "a", seed=1)
    write_demo_data(tmp_path / "b", seed=2)
    fa = json.loads((tmp_path / "a/facts.json").read_text())
    fb = json.loads((tmp_path / "b/facts.json").read_text())
    assert {p["part_number"] for p in fa["products"]}.isdisjoint({p["part_number"] for p in fb["products"]})
    assert (tmp_path / "a/eval.jsonl").read_text() != (tmp_path / "b/eval.jsonl").read_text()


def test_layout_and_formats(demo_data):
    for name in ("sft.jsonl", "prefs.jsonl", "rl_prompts.jsonl", "eval.jsonl"):
        rows = [json.loads(line) for line in (demo_data / name).read_text().splitlines()]
        assert rows, name
    sft = [json.loads(line) for line in (demo_data / "sft.jsonl").read_text().splitlines()]
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in sft)
    prefs = [json.loads(line) for line in (demo_data / "prefs.jsonl").read_text().splitlines()]
    assert all(p["chosen"] != p["rejected"] for p in prefs)
    assert list((demo_data / "docs").rglob("*.md")) and list((demo_data / "docs").rglob("*.py"))


def test_eval_facts_are_in_docs_but_not_in_training_questions(demo_data):
    docs = "\n".join(p.read_text() for p in (demo_data / "docs").rglob("*") if p.is_file())
    evals = [json.loads(line) for line in (demo_data / "eval.jsonl").read_text().splitlines()]
    facts = json.loads((demo_data / "facts.json").read_text())
    held = set(facts["held_out_products"])
    assert evals and all(e["id"].split(":", 1)[1] in held for e in evals)
    for e in evals:
        assert e["answer"] in docs, e  # learnable from pre-training data
    train_text = (demo_data / "sft.jsonl").read_text() + (demo_data / "rl_prompts.jsonl").read_text() \
        + (demo_data / "prefs.jsonl").read_text()
    for product in held:
        assert product not in train_text  # held-out entities never appear in post-training data
