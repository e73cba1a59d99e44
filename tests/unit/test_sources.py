"""Reading sources: every bad input is named by file and line, nothing skipped silently."""

from __future__ import annotations

import pytest

from forge_ray.data.sources import DataError, expand_source, iter_texts
from forge_ray.spec.sections import SourceSpec

CASES = {
    "truncated_json": (b'{"text": "ok"}\n{"text": "cut\n', "a.jsonl", 2, "malformed JSON"),
    "missing_field": (b'{"text": "ok"}\n{"body": "x"}\n', "a.jsonl", 2, "missing field 'text'"),
    "wrong_type": (b'{"text": "ok"}\n{"text": "ok"}\n{"text": 5}\n', "a.jsonl", 3, "must be a string, got int"),
    "bad_utf8": (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "a.jsonl", 2, "invalid UTF-8"),
    "empty_file": (b"", "a.jsonl", None, "file is empty"),
    "not_an_object": (b'{"text": "ok"}\n[1, 2]\n', "a.jsonl", 2, "expected a JSON object"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_names_file_and_line(tmp_path, case):
    content, name, line, message = CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        list(iter_texts([SourceSpec(path=str(path))]))
    err = exc.value
    assert err.file.endswith(name) and err.line == line and message in str(err)
    if line is not None:
        assert f"{name}:{line}:" in str(err)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        expand_source(SourceSpec(path=str(tmp_path / "nope")))


def test_directory_tree_include_exclude_and_metadata(tmp_path):
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "README.md").write_text("# readme\n")
    (tmp_path / "src" / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "src" / "pkg" / "skip.py").write_text("y = 2\n")
    (tmp_path / "src" / "blob.bin").write_bytes(b"\0\1")
    docs = list(iter_texts([SourceSpec(path=str(tmp_path / "src"), exclude=["**/skip.py"])]))
    assert [(d["text"]) for d in docs] == ["# readme\n", "x = 1\n"]
    files = expand_source(SourceSpec(path=str(tmp_path / "src"), exclude=["**/skip.py"]))
    assert [f.rel for f in files] == ["README.md", "pkg/m.py"]


def test_chat_and_field_formats(tmp_path):
    chat = tmp_path / "c.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    assert [d["text"] for d in iter_texts([SourceSpec(path=str(chat), format="chat")])] == ["hi\nyo"]
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    docs = list(iter_texts([SourceSpec(path=str(rows), field="body")]))
    assert [(d["text"], d["line"]) for d in docs] == [("one", 1), ("two", 3)]
