"""Run directories: manifest lifecycle, resume vs refuse, atomic writes, storage root choice."""

from __future__ import annotations

import json

import pytest

from forge_ray.runs import RunError, RunExistsError, Storage, storage_root

SPEC_A = "kind: tokenizer\nname: r\nvocab_size: 1000\n"
SPEC_B = "kind: tokenizer\nname: r\nvocab_size: 2000\n"


def test_storage_root_precedence(monkeypatch):
    monkeypatch.delenv("FORGE_STORAGE", raising=False)
    assert storage_root() == "./forge_runs"
    monkeypatch.setenv("FORGE_STORAGE", "/env/root")
    assert storage_root() == "/env/root"
    assert storage_root("/flag/root") == "/flag/root"


def test_lifecycle_success(storage):
    run = Storage(str(storage)).run("r")
    m = run.create_or_resume("tokenizer", SPEC_A, parents=["p1"], fingerprints={"src": "abc"})
    assert m["status"] == "running" and m["parents"] == ["p1"] and m["fingerprints"] == {"src": "abc"}
    assert (storage / "r" / "spec.yaml").read_text() == SPEC_A
    run.log_metrics(1, loss=2.5)
    run.log_metrics(2, loss=2.0)
    m = run.succeed({"loss": 2.0}, {"model": "model"})
    on_disk = json.loads((storage / "r" / "manifest.json").read_text())
    assert on_disk == m
    for key in ("name", "kind", "status", "parents", "started_at", "ended_at", "metrics", "error"):
        assert key in on_disk
    assert on_disk["status"] == "succeeded" and on_disk["ended_at"] and on_disk["error"] is None
    assert [r["loss"] for r in run.metrics()] == [2.5, 2.0]
    assert not list((storage / "r").glob("*.tmp-*"))  # atomic writes leave no temporaries


def test_failure_records_machine_readable_error(storage):
    run = Storage(str(storage)).run("r")
    run.create_or_resume("tokenizer", SPEC_A, [])
    m = run.fail(RunError("data", "corpus/a.jsonl:3: malformed JSON", "fix the line"))
    assert m["status"] == "failed"
    assert m["error"] == {"kind": "data", "message": "corpus/a.jsonl:3: malformed JSON", "hint": "fix the line"}


def test_same_spec_resumes_and_changed_spec_is_refused(storage):
    store = Storage(str(storage))
    store.run("r").create_or_resume("tokenizer", SPEC_A, [])
    store.run("r").fail(RunError("runtime", "killed"))
    m = store.run("r").create_or_resume("tokenizer", SPEC_A, [])
    assert m["status"] == "running" and m["attempts"] == 2 and m["resumed_at"]
    before = (storage / "r" / "manifest.json").read_text()
    with pytest.raises(RunExistsError, match="different spec"):
        store.run("r").create_or_resume("tokenizer", SPEC_B, [])
    assert (storage / "r" / "manifest.json").read_text() == before  # nothing touched
    assert (storage / "r" / "spec.yaml").read_text() == SPEC_A


def test_list_runs(storage):
    store = Storage(str(storage))
    for name in ("a", "b"):
        store.run(name).create_or_resume("tokenizer", SPEC_A.replace("name: r", f"name: {name}"), [])
    (storage / "not-a-run").mkdir()
    assert sorted(m["name"] for m in store.list_runs()) == ["a", "b"]
    assert Storage(str(storage / "missing")).list_runs() == []


def test_remote_style_uri(tmp_path):
    store = Storage(f"file://{tmp_path}")
    run = store.run("r")
    run.create_or_resume("tokenizer", SPEC_A, [])
    with run.local_dir("out") as d:
        (d / "x.txt").write_text("hi")
    assert (tmp_path / "r" / "out" / "x.txt").read_text() == "hi"
    assert store.exists("r")


def test_output_dir_appears_only_on_success(storage):
    run = Storage(str(storage)).run("r")
    run.create_or_resume("tokenizer", SPEC_A, [])
    with pytest.raises(RuntimeError):
        with run.local_dir("model") as d:
            (d / "weights.bin").write_text("half")
            raise RuntimeError("crash mid-write")
    assert not (storage / "r" / "model").exists()
    leftovers = [p.name for p in (storage / "r").iterdir() if p.name.startswith(".")]
    assert leftovers == [run.RESERVE]  # only the running run's space reserve, no half output
    with run.local_dir("model") as d:
        (d / "weights.bin").write_text("whole")
    assert (storage / "r" / "model" / "weights.bin").read_text() == "whole"


def test_a_pipeline_may_change_its_stage_list_and_keeps_the_old_spec(storage):
    run = Storage(str(storage)).run("p")
    run.create_or_resume("pipeline", "kind: pipeline\nstages: [a]\n", [])
    m = run.create_or_resume("pipeline", "kind: pipeline\nstages: [a, b]\n", [])
    assert m["spec_changed_at"] and (storage / "p" / "spec.yaml").read_text().endswith("[a, b]\n")
    assert (storage / "p" / "spec.1.yaml").read_text().endswith("[a]\n")


def test_a_metrics_line_cut_short_is_dropped_not_glued_to_the_next(storage):
    """A full disk can stop an append mid-line; the resumed run must not glue its next record
    onto the fragment (one garbled line, a lost record), and readers must not choke on it."""
    run = Storage(str(storage)).run("r")
    run.create_or_resume("pretrain", SPEC_A, [])
    run.append_line("metrics.jsonl", '{"step": 1, "loss": 2.5}')
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('{"step": 2, "lo')  # the disk filled here
    assert [m["step"] for m in run.metrics()] == [1]
    run.append_line("metrics.jsonl", '{"step": 2, "loss": 2.25}')
    assert run.metrics() == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}]
