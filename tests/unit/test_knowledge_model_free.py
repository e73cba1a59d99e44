"""Model-free augmentation keeps every fact: permutation keeps every sentence exactly once (and
its subject), rendering states every field of every record, restating names the entity."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from forge_ray.knowledge.model_free import blocks, clauses, permute, render, restate, sentences

DOC = """# Beisgeithon

Beisgeithon is an active product of Voupeith Systems. It was released in 2020. Its part number is GM-1030.
The product weighs 60 kg.

## Ownership

Beisgeithon is owned by Team Falcon. Questions go to #falcon-ops.

- Part number: GM-1030
- Owner: Team Falcon
"""


def test_permutation_keeps_every_sentence_exactly_once_and_the_structure_in_place():
    rng = random.Random(0)
    copies = permute(DOC, 6, rng)
    assert len(copies) == 6 and len(set(copies)) > 1  # the orders differ
    original = [b for b in blocks(DOC)]
    for copy in copies:
        got = blocks(copy)
        assert [b.prose for b in got] == [b.prose for b in original]
        for before, after in zip(original, got):
            if not before.prose:
                assert after.text == before.text  # headings and lists stay as they were
                continue
            want = Counter(restate(s, "Beisgeithon") for s in sentences(before.text))
            assert Counter(sentences(after.text)) == want  # each sentence once, none lost, none added


def test_restating_gives_every_sentence_its_subject():
    assert restate("It was released in 2020.", "Beisgeithon") == "Beisgeithon was released in 2020."
    assert restate("Its part number is GM-1030.", "Beisgeithon") == "Beisgeithon's part number is GM-1030."
    assert restate("They are based in Northvale.", "Team Bison") == "Team Bison is based in Northvale."
    assert restate("Bison owns Keilkrou.", "Team Bison", aliases=("Bison",)) == "Team Bison owns Keilkrou."
    assert restate("Team Bison owns Keilkrou.", "Team Bison", aliases=("Bison",)) == "Team Bison owns Keilkrou."
    assert restate("Questions go to #falcon-ops.", "Beisgeithon") == "Questions go to #falcon-ops."
    copy = permute(DOC, 1, random.Random(1))[0]
    assert "It was" not in copy and "Its part" not in copy and "Beisgeithon's part number is GM-1030." in copy


def test_clauses_lead_every_statement_with_the_entity_and_keep_every_fact():
    assert clauses("Released in 2004, Bonbul is a legacy product of Voupeith Systems.", "Bonbul") == [
        "Bonbul is a legacy product of Voupeith Systems.", "Bonbul: released in 2004."]
    assert clauses("It is one of the active products of Voupeith Systems; it came out in 2015.", "Bonbul") == [
        "Bonbul is one of the active products of Voupeith Systems.", "Bonbul came out in 2015."]
    assert clauses("Bonbul is an active product of Voupeith Systems, first released in 2013.", "Bonbul") == [
        "Bonbul is an active product of Voupeith Systems.", "Bonbul: first released in 2013."]
    # nothing to split, or a piece too short to be a statement: the sentence whole, restated
    assert clauses("It carries part number KM-2387.", "Bonbul") == ["Bonbul carries part number KM-2387."]
    assert clauses("The product, sold in Paris, is popular.", "Bonbul") == ["Bonbul, sold in Paris, is popular."]


def test_split_copies_keep_every_fact_once_and_use_both_phrasings():
    doc = ("# Bonbul\n\nReleased in 2004, Bonbul is a legacy product of Voupeith Systems. "
           "It carries part number KM-2387.\n\nIt is maintained by Team Falcon, which owns it.\n")
    copies = permute(doc, 12, random.Random(0), split=True)
    for copy in copies:
        for fact in ("2004", "KM-2387", "Team Falcon", "Voupeith Systems"):
            assert copy.count(fact) == 1, (fact, copy)  # split or whole, a fact is stated once per copy
    assert any("Bonbul: released in 2004." in c for c in copies)  # split in some copies …
    assert any("Released in 2004, Bonbul" in c for c in copies)  # … whole in others


def test_rendering_states_every_field_of_every_record_in_each_phrasing():
    rows = [{"product": "Beisgeithon", "part_number": "GM-1030", "owner": "Team Falcon", "release_year": 2020},
            {"product": "Bonbul", "part_number": "SM-7828", "owner": "Team Osprey", "release_year": 2019,
             "weight": ""}]  # an empty cell is not a fact
    rng = random.Random(0)
    for row in rows:
        texts = render(row, "product", 4, rng)
        assert len(texts) == 4 and len(set(texts)) == 4
        for text in texts:
            for column, value in row.items():
                if column != "product" and value != "":
                    assert str(value) in text, (column, text)
            assert text.count(row["product"]) == 3  # the entity named in every statement
            assert "weight" not in text
    custom = render(rows[0], "product", 1, rng, field_templates={"owner": ("{value} looks after {entity}.",)})[0]
    assert "Team Falcon looks after Beisgeithon." in custom
    with pytest.raises(KeyError):
        render({"name": "x"}, "product", 1, rng)


def test_augmenting_a_document_is_reproducible_whatever_the_order_and_carries_provenance():
    from forge_ray.knowledge.augment import ModelFreeStrategies, augment_document, augment_record

    how = ModelFreeStrategies(multiplicity=2, permute=3)
    rows = augment_document("products/beisgeithon.md", DOC, how, seed=7)
    assert [r["strategy"] for r in rows] == ["original"] * 2 + ["permute"] * 3
    assert all(r["source_doc"] == "products/beisgeithon.md" and r["span"] == [0, len(DOC)] for r in rows)
    assert len({r["doc_id"] for r in rows}) == 5
    other = augment_document("products/other.md", DOC.replace("Beisgeithon", "Other"), how, seed=7)
    assert augment_document("products/beisgeithon.md", DOC, how, seed=7) == rows  # independent of what ran before
    assert other[2]["text"] != rows[2]["text"]
    assert augment_document("empty.md", "  \n", how) == []
    record = {"product": "Bonbul", "owner": "Team Osprey"}
    rendered = augment_record("tables/products.csv", 3, record, "product", how)
    assert len(rendered) == 4 and all(r["source_doc"] == "tables/products.csv:3" for r in rendered)
    assert all("Team Osprey" in r["text"] for r in rendered)
