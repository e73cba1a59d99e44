"""The key under which prepared data is found again: the same for the same inputs whatever
the run's name or where the tokenizer was fetched to; different when a source file (its
content or its modification time), the tokenizer's files or a preparation setting differ."""

from __future__ import annotations

import dataclasses
import os
import shutil

from forge_ray.data.reuse import find_prepared, preparation_key, source_files
from forge_ray.runs import Storage
from forge_ray.spec.sections import SourceSpec
from forge_ray.spec.stages import DataStage


def _inputs(tmp_path):
    docs, tok = tmp_path / "docs", tmp_path / "tok"
    docs.mkdir()
    tok.mkdir()
    (docs / "a.md").write_text("alpha " * 50)
    (docs / "b.md").write_text("beta " * 50)
    (tok / "tokenizer.json").write_text('{"model": 1}')
    spec = DataStage(kind="data", name="one-data", sources=[SourceSpec(path=str(docs))], tokenizer=str(tok),
                     seq_len=64)
    return spec, docs, tok


def _key(spec, tok):
    return preparation_key(spec, source_files(spec), str(tok))


def test_the_key_ignores_the_run_name_and_the_tokenizer_path(tmp_path):
    spec, _, tok = _inputs(tmp_path)
    moved = tmp_path / "fetched-elsewhere"
    shutil.copytree(tok, moved)
    other = dataclasses.replace(spec, name="two-data", tokenizer=str(moved))
    assert _key(spec, tok) == _key(other, moved)


def test_the_key_changes_with_a_source_file_the_tokenizer_or_a_setting(tmp_path):
    spec, docs, tok = _inputs(tmp_path)
    before = _key(spec, tok)
    assert _key(dataclasses.replace(spec, seq_len=128), tok) != before
    assert _key(dataclasses.replace(spec, seed=1), tok) != before
    (docs / "b.md").write_text("gamma " * 50)  # same size, other content
    edited = _key(spec, tok)
    assert edited != before
    os.utime(docs / "a.md", ns=(1, 1))  # touched (an edit past the first MiB looks like this)
    assert _key(spec, tok) != edited
    edited = _key(spec, tok)
    (tok / "tokenizer.json").write_text('{"model": 2}')
    assert _key(spec, tok) != edited


def test_only_a_succeeded_data_run_with_the_key_is_found(tmp_path):
    storage = Storage(str(tmp_path / "runs"))
    for name, kind, status, key in (("failed-data", "data", "failed", "k1"), ("model", "pretrain", "succeeded", "k1"),
                                    ("other-data", "data", "succeeded", "k2")):
        run = storage.run(name)
        run.create_or_resume(kind, f"name: {name}\n", [], fingerprints={"prepared": key})
        if status == "succeeded":
            run.succeed()
        else:
            run.update(status="failed")
    assert find_prepared(storage, "k1") is None
    assert find_prepared(storage, "k2") == "other-data"
