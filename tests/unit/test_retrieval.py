"""The retrieval baseline on a small index with known answers: chunks keep their provenance,
BM25 finds a fact's own document, recall@k counts a two-document question only when both came."""

from __future__ import annotations

import pytest

from forge_ray.eval.retrieval import BM25Index, chunk_document, rag_prompt, recall_at_k

DOCS = {
    "products/bonbul.md": "# Bonbul\n\nBonbul is a product of Voupeith Systems.\n\nThe part number of Bonbul is "
                          "SM-7828. Bonbul is owned by Team Osprey.",
    "products/keilkrou.md": "# Keilkrou\n\nKeilkrou is a pump. The part number of Keilkrou is GM-1030. "
                            "Keilkrou is owned by Team Bison.",
    "teams/osprey.md": "# Team Osprey\n\nTeam Osprey is based in Eastholm and led by Brustan Fulzi.",
    "teams/bison.md": "# Team Bison\n\nTeam Bison is based in Northvale. The team channel is #bison-ops.",
}


@pytest.fixture(scope="module")
def index():
    return BM25Index([c for d, t in DOCS.items() for c in chunk_document(d, t, max_chars=80)])


def test_chunks_carry_their_document_and_span(index):
    for chunk in index.chunks:
        source = DOCS[chunk.doc_id]
        assert chunk.text.endswith(source[chunk.start:chunk.end].strip())
    later = [c for c in index.chunks if c.doc_id == "products/bonbul.md" and c.start > 0]
    assert later and all(c.text.startswith(("Bonbul: ", "# Bonbul")) for c in later)  # whose fact it is


def test_bm25_finds_each_facts_document_and_recall_counts_two_hop_questions(index):
    questions = ["What is the part number of Keilkrou?", "Which team owns Bonbul?", "Where is Team Bison based?",
                 "Where is the team that owns Bonbul based?"]
    gold = [{"products/keilkrou.md"}, {"products/bonbul.md"}, {"teams/bison.md"},
            {"products/bonbul.md", "teams/osprey.md"}]
    top1 = index.search(questions, k=1)
    assert [r[0].doc_id for r in top1[:3]] == ["products/keilkrou.md", "products/bonbul.md", "teams/bison.md"]
    assert recall_at_k(top1, gold) == 0.75  # one passage cannot hold both documents of the two-hop question
    assert recall_at_k(index.search(questions, k=len(index.chunks)), gold) == 1.0
    prompt = rag_prompt(questions[0], top1[0])
    assert "GM-1030" in prompt and prompt.endswith("Question: What is the part number of Keilkrou?")


def test_an_empty_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing to index"):
        BM25Index([])


def test_task_rows_get_passages_gold_flags_and_recall(index):
    from forge_ray.eval.retrieval import same_document, with_passages

    rows = [{"prompt": "What is the part number of Keilkrou?", "answer": "GM-1030", "line": 1,
             "source_docs": ["docs/products/keilkrou.md"]},
            {"prompt": "Where is the team that owns Bonbul based?", "answer": "Eastholm", "line": 2,
             "source_docs": ["docs/products/bonbul.md", "docs/teams/osprey.md"]},
            {"prompt": "Who is the lead of Team Osprey?", "answer": "Brustan Fulzi", "line": 3}]
    out, recall = with_passages(rows, index, k=1, max_context_chars=1000, gold_field="source_docs")
    assert [r["question"] for r in out] == [r["prompt"] for r in rows]
    assert out[0]["prompt"].endswith("Question: " + rows[0]["prompt"]) and "GM-1030" in out[0]["prompt"]
    assert out[0]["gold_retrieved"] is True and out[1]["gold_retrieved"] is False  # one passage, two documents
    assert "gold_retrieved" not in out[2]  # no gold documents named: not counted
    assert recall == 0.5 and all(len(r["passages"]) == 1 for r in out)
    assert same_document("docs/products/keilkrou.md", "products/keilkrou.md")
    assert not same_document("docs/products/keilkrou.md", "ilkrou.md")  # whole path components only
    short, _ = with_passages(rows[:1], index, k=4, max_context_chars=60, gold_field="source_docs")
    assert len(short[0]["prompt"]) <= 60 + len("\n\nQuestion: ") + len(rows[0]["prompt"])  # the context is capped


def test_eval_spec_needs_retrieval_for_rag_and_known_models():
    from forge_ray.spec import SpecError, build_spec

    base = {"kind": "eval", "name": "e", "models": ["a", "b"], "tasks": [{"name": "t", "path": __file__}]}
    with pytest.raises(SpecError, match="retrieval"):
        build_spec({**base, "mode": "both"})
    with pytest.raises(SpecError, match="modes.c"):
        build_spec({**base, "modes": {"c": "rag"}, "retrieval": {"documents": [{"path": "."}]}})
    spec = build_spec({**base, "modes": {"b": "rag"}, "mode": "both",
                       "retrieval": {"documents": [{"run": "demo-corpus"}]}})
    from forge_ray.eval.stage import shown_models

    assert shown_models(spec) == ["a", "a + rag", "b + rag"]
    assert spec.input_runs()["retrieval.documents[0].run"] == "demo-corpus"  # a parent in lineage
