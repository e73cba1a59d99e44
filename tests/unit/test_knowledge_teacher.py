"""The teacher's filters: an answer counts only when its passage holds it, a rewrite may not
invent a number, code or name, output in no recognisable format is counted as unparseable —
and the prompts carry each chunk's provenance."""

from __future__ import annotations

import random

import pytest

from forge_ray.eval.retrieval import chunk_document
from forge_ray.knowledge.teacher import Request, answer_grounded, entities, invented, requests, study_items

CHUNK = ("Bonbul is a pump made by Voupeith Systems. It was released in 2014 and carries part number SM-7828. "
         "The product is owned by Team Osprey.")


def _req(task: str, pair=None) -> Request:
    return Request(task, "products/bonbul.md", 10, 10 + len(CHUNK), CHUNK, "Bonbul", "…", pair)


@pytest.mark.parametrize("answer, grounded", [
    ("SM-7828", True), ("sm-7828.", True), ("Team  Osprey", True), ("team osprey", True),
    ("SM-7829", False), ("Team Bison", False), ("", False), ("2015", False)])
def test_an_answer_is_grounded_only_when_its_passage_holds_it(answer, grounded):
    assert answer_grounded(answer, CHUNK) is grounded


def test_qa_output_keeps_the_grounded_pairs_and_counts_the_rest():
    out = "Q: What is the part number of Bonbul?\nA: SM-7828\nQ: Who owns Bonbul?\nA: Team Bison\n"
    items, reason = study_items(_req("qa"), out)
    assert items == ["Q: What is the part number of Bonbul?\nA: SM-7828"] and reason is None
    assert study_items(_req("qa"), "Q: Who owns Bonbul?\nA: Team Bison") == ([], "ungrounded")
    assert study_items(_req("qa"), "Bonbul is a pump. Bonbul is a pump.") == ([], "unparseable")
    assert study_items(_req("qa"), "") == ([], "unparseable")


def test_a_rewrite_may_not_invent_numbers_codes_or_names():
    good = "Voupeith Systems makes the Bonbul pump, released in 2014 under part number SM-7828. Team Osprey owns it."
    assert invented(good, CHUNK) == []
    assert study_items(_req("paraphrase"), good) == (["# Bonbul\n\n" + good], None)
    assert invented("Bonbul came out in 2015.", CHUNK) == ["2015"]
    assert invented("Bonbul is owned by Team Bison.", CHUNK) == ["Team Bison"]
    assert study_items(_req("paraphrase"), "Bonbul has part number SM-7000.") == ([], "ungrounded")
    assert study_items(_req("paraphrase"), "ok") == ([], "unparseable")


def test_relations_must_name_both_entities():
    pair = ("Bonbul", "Team Osprey")
    assert study_items(_req("relations", pair), "Team Osprey owns Bonbul, a pump.")[1] is None
    assert study_items(_req("relations", pair), "Bonbul is a pump made in 2014.") == ([], "ungrounded")


def test_requests_carry_provenance_and_pick_entity_pairs_from_the_chunk():
    doc = "# Bonbul\n\n" + CHUNK + "\n\nSpare parts are kept in the central store."
    chunks = chunk_document("products/bonbul.md", doc, max_chars=200)
    assert {"Voupeith Systems", "SM-7828", "Team Osprey", "Bonbul"} <= set(entities(CHUNK))
    assert "It" not in entities(CHUNK) and "The" not in entities(CHUNK)
    out = requests("products/bonbul.md", chunks, "Bonbul", ["qa", "relations"], {}, samples=2, pairs_per_chunk=2,
                   rng=random.Random(0))
    for r in out:
        assert doc[r.start:r.end].strip() in r.chunk and r.source_doc == "products/bonbul.md"
        assert r.chunk in r.prompt
    relations = [r for r in out if r.task == "relations"]
    assert relations and all(r.pair[0] in r.chunk and r.pair[1] in r.chunk and r.pair[0] in r.prompt for r in relations)
    assert sum(r.task == "qa" for r in out) == 2 * len(chunks)  # two samples per chunk


def test_a_name_does_not_run_across_a_line_break():
    assert invented("# Bonbul\n\nThe part number of Bonbul is SM-7828.", CHUNK) == []
    assert entities("Team Osprey\nBonbul") == ["Team Osprey", "Bonbul"]
