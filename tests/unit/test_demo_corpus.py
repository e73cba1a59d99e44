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
    shared = {p["part_number"] for p in fa["products"]} & {p["part_number"] for p in fb["products"]}
    assert len(shared) <= 2  # independent draws from 2.9 million part numbers
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
    assert evals and all(e["id"].split(":", 1)[1] in held | set(facts["held_out_teams"]) for e in evals)
    for e in evals:
        assert e["answer"] in docs, e  # learnable from pre-training data
    train_text = (demo_data / "sft.jsonl").read_text() + (demo_data / "rl_prompts.jsonl").read_text() \
        + (demo_data / "prefs.jsonl").read_text() + (demo_data / "sft_rag.jsonl").read_text()
    for product in held:
        assert product not in train_text  # held-out entities never appear in post-training data
    teams = {t["name"]: t for t in facts["teams"]}
    for team in facts["held_out_teams"]:  # a held-out team's own facts are never answered in post-training data
        assert teams[team]["lead"] not in train_text and teams[team]["location"] not in train_text


def test_enough_held_out_questions_two_document_questions_and_records(demo_data):
    one = [json.loads(line) for line in (demo_data / "eval.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (demo_data / "eval_two_hop.jsonl").read_text().splitlines()]
    assert len(one) >= 150 and len(two) >= 50  # intervals of about ±0.07 on the one-hop questions
    assert all(r["hops"] == 1 and len(r["source_docs"]) == 1 for r in one)
    facts = json.loads((demo_data / "facts.json").read_text())
    city = {t["name"]: t["location"] for t in facts["teams"]}
    owner = {p["name"]: p["team"] for p in facts["products"]}
    for r in two:
        product_page, team_page = (demo_data / d for d in r["source_docs"])
        product = r["id"].split(":", 1)[1]
        # the owning team is only on the product's page, its city only on the team's page
        assert owner[product] in product_page.read_text() and city[owner[product]] not in product_page.read_text()
        assert r["answer"] == city[owner[product]] and city[owner[product]] in team_page.read_text()
    header = (demo_data / "records/products.csv").read_text().splitlines()[0]
    assert header == "product,part_number,owner,weight_kg,status"
    assert len((demo_data / "records/products.csv").read_text().splitlines()) == len(facts["products"]) + 1


def test_each_fact_is_stated_once_in_the_prose(demo_data):
    """Real documents rarely repeat a fact; the demo's do not either (augmentation has to do it)."""
    docs = "\n".join(p.read_text() for p in (demo_data / "docs").rglob("*") if p.is_file() and p.name != "faq.md")
    facts = json.loads((demo_data / "facts.json").read_text())
    assert all(docs.count(p["part_number"]) == 1 for p in facts["products"])
    assert all(docs.count(f"{t['location']}.") == 1 for t in facts["teams"])


def test_reading_chats_answer_from_their_passages_about_products_only_they_name(demo_data):
    """A reading chat's answer is in the passages in front of it, and its product is in no
    document of the knowledge base: it can be answered by reading, not from memory."""
    facts = json.loads((demo_data / "facts.json").read_text())
    known = {p["name"] for p in facts["products"]}
    docs = "\n".join(p.read_text() for p in (demo_data / "docs").rglob("*") if p.is_file())
    chats = [json.loads(line)["messages"] for line in (demo_data / "sft_rag.jsonl").read_text().splitlines()]
    assert len(chats) >= 150
    for user, assistant in chats:
        passages, question = user["content"].rsplit("Question: ", 1)
        named = {w.strip("?.,") for w in question.split() if w[:1].isupper()}
        (entity,) = named & set(assistant["content"].rstrip(".").split())  # the product, named in both
        assert entity not in known and entity not in docs, entity
        assert f"# {entity}" in passages  # the gold page is among the passages
        answer = assistant["content"].rstrip(".").rsplit(" ", 1)[-1]
        assert answer in passages, (answer, question)
