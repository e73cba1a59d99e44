"""The ``augment`` stage for real (local Ray cluster, the CLI as a user runs it): documents and a
records table in, an augmented corpus out whose every permuted copy keeps each sentence exactly
once with its subject restated, whose every rendered row states every field of its record, whose
rows carry provenance, and from which a row leaking an eval answer is dropped and counted; a
``data`` stage reads it with ``run:`` (lineage recorded, the deliberate copies not deduplicated).
Bad input — a records row short of a column, an empty document — fails naming the file and line,
and writes no corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from forge_ray.console import NATIVE_LINE
from forge_ray.knowledge.model_free import sentences
from tests.conftest import forge, read_json

pytestmark = pytest.mark.slow

PRODUCT = ("# Bonbul\n\nBonbul is a pump made by Voupeith Systems. It was released in 2014. Its part number is "
           "SM-7828.\n\nThe product is owned by Team Osprey. Spare parts are kept in the central store.\n")
TEAM = "# Team Osprey\n\nTeam Osprey is led by Brustan Fulzi. They are based in Eastholm.\n"
FAQ = "# FAQ\n\nQ: Who leads Team Bison?\nA: Drelka Moss\n\nQ: Where is Team Bison based?\nA: Northvale\n"
#: a document that repeats an eval question word for word: the decontamination must drop it
LEAK = ("# Notes\n\nSomeone asked which team should be contacted about the Keilkrou pump when it breaks down at night "
        "and the answer was Team Bison.\n")
EVAL = {"prompt": "Which team should be contacted about the Keilkrou pump when it breaks down at night?",
        "answer": "Team Bison"}


def _write(root: Path, docs: dict[str, str], records: str) -> None:
    for rel, text in docs.items():
        (root / "docs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / rel).write_text(text)
    (root / "products.csv").write_text(records)
    (root / "eval.jsonl").write_text(json.dumps(EVAL) + "\n")


def _pipeline(root: Path) -> Path:
    spec = {"kind": "pipeline", "name": "kn", "stages": [
        {"kind": "augment", "name": "kn-augmented", "seed": 3,
         "sources": [{"path": str(root / "docs")}],
         "records": [{"path": str(root / "products.csv"), "entity": "product",
                      "templates": {"weight_kg": ["{entity} weighs {value} kg.", "The weight of {entity} is {value} kg."]}}],
         "multiplicity": 2, "permute": {"copies": 3}, "render": {"copies": 3}, "exclude": ["faq.md"],
         "decontaminate": [str(root / "eval.jsonl")]},
        {"kind": "data", "name": "kn-data", "sources": [{"run": "kn-augmented"}]},
    ]}
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _corpus(run: Path) -> list[dict]:
    return [r for f in sorted((run / "corpus").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_augment_stage_and_a_data_stage_reading_it(ray_cluster, tmp_path, storage):
    _write(tmp_path, {"products/bonbul.md": PRODUCT, "teams/osprey.md": TEAM, "faq.md": FAQ, "notes.md": LEAK},
           "product,part_number,weight_kg,owner\nBonbul,SM-7828,12,Team Osprey\nKeilkrou,GM-1030,40,Team Bison\n")
    result = forge("run", str(_pipeline(tmp_path)), "--storage", str(storage), env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert result.returncode == 0, result.stderr[-3000:]
    # Ray's C++ lines (the data stage's actor pool: "E … core_worker.cc … max_restarts > 0") are in the log
    assert not any(NATIVE_LINE.match(line) for line in result.stderr.encode().splitlines()), result.stderr[-3000:]
    run = storage / "kn-augmented"
    rows = _corpus(run)
    by = lambda strategy: [r for r in rows if r["strategy"] == strategy]  # noqa: E731
    # permuted copies: every sentence of the original exactly once, the subject restated
    permuted = [r for r in by("permute") if r["source_doc"] == "products/bonbul.md"]
    assert permuted and all(r["span_start"] == 0 and r["span_end"] == len(PRODUCT) for r in permuted)
    original = sorted(s for para in PRODUCT.split("\n\n")[1:] for s in sentences(para))
    restated = sorted(s.replace("It was", "Bonbul was").replace("Its part", "Bonbul's part")
                      .replace("The product is", "Bonbul is") for s in original)
    for r in permuted:
        assert sorted(s for para in r["text"].split("\n\n")[1:] for s in sentences(para)) == restated
    assert any("Team Osprey is based in Eastholm." in r["text"] for r in by("permute"))  # "They are" restated
    assert len(by("original")) == 2 * 2  # multiplicity 2 of the product and the team page (the leak is dropped)
    # rendered records: every field of every row in every phrasing, with the table's own templates
    rendered = by("render")
    assert len(rendered) == 2 * 3
    for r in rendered:
        values = ["SM-7828", "12", "Team Osprey"] if r["source_doc"].endswith(":1") else ["GM-1030", "40", "Team Bison"]
        assert all(v in r["text"] for v in values), r
    assert any("weighs 12 kg" in r["text"] or "weight of Bonbul is 12 kg" in r["text"] for r in rendered)
    # the FAQ is kept as it is (its order carries meaning), the leaking note is gone
    assert [r["text"] for r in by("kept")] == [FAQ]
    assert not any("Keilkrou pump when it breaks down" in r["text"] for r in rows)
    report = read_json(run / "report" / "report.json")
    # the note's two original copies (its one-sentence "permutations" were dropped as duplicates first)
    assert report["metrics"]["contaminated_removed"] == 2 and report["strategies"]["permute"]["duplicates"] >= 3
    assert report["strategies"]["render"]["kept"] == 6 and report["metrics"]["records"] == 2
    assert "| permute |" in (run / "report" / "report.md").read_text()
    # a data stage reads the corpus by run name: lineage, and the deliberate copies survive dedup
    data = read_json(storage / "kn-data" / "manifest.json")
    assert data["parents"] == ["kn-augmented"]
    assert data["metrics"]["docs_out"] == len(rows)


@pytest.mark.parametrize("case", ["short-row", "empty-doc"])
def test_bad_input_names_the_file_and_line_and_writes_no_corpus(ray_cluster, tmp_path, storage, case):
    docs = {"products/bonbul.md": PRODUCT, "empty.md": "" if case == "empty-doc" else TEAM}
    records = "product,part_number,owner\nBonbul,SM-7828,Team Osprey\nKeilkrou,GM-1030\n" if case == "short-row" \
        else "product,part_number,weight_kg\nBonbul,SM-7828,12\n"
    _write(tmp_path, docs, records)
    result = forge("run", str(_pipeline(tmp_path)), "--storage", str(storage), env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert result.returncode != 0
    expected = f"{tmp_path / 'products.csv'}:3: row has 2 fields, the header has 3" if case == "short-row" \
        else f"{tmp_path / 'docs' / 'empty.md'}"
    assert expected in result.stderr, result.stderr[-2000:]
    if case == "empty-doc":
        assert "empty.md: file is empty" in result.stderr
    assert not (storage / "kn-augmented" / "corpus").exists()
    assert not (storage / "kn-data").exists()


def test_an_in_cluster_teacher_run_writes_grounded_study_material(ray_cluster, demo_runs, demo_data, tmp_path):
    """The demo's SFT model as the teacher, loaded by a Ray Data actor (vLLM where installed)."""
    from tests.integration.test_serve_import import _teacher_spec, check_teacher_corpus

    spec = _teacher_spec(tmp_path, "teacher-run", "demo-sft", demo_data)
    result = forge("run", spec, "--storage", str(demo_runs), env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert result.returncode == 0, result.stderr[-3000:]
    check_teacher_corpus(demo_runs / "teacher-run", demo_data)
    assert read_json(demo_runs / "teacher-run" / "manifest.json")["parents"] == ["demo-sft"]
