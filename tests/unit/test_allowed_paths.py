"""``FORGE_ALLOWED_DATA_ROOTS``: on a shared deployment a spec cannot make the platform read a
file outside the operator's data roots — not by naming it, not through a glob, a symlink, a
task file, an image, a local model directory or an import; unset, single-user use is unchanged."""

from __future__ import annotations

import json
import os

import pytest

from forge_ray import api
from forge_ray.allowed_paths import PathNotAllowed, require_allowed
from forge_ray.data.sources import expand_source
from forge_ray.spec import SpecError, build_spec
from forge_ray.spec.sections import SourceSpec


@pytest.fixture
def layout(tmp_path, monkeypatch):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("the payroll of everyone")
    (allowed / "doc.txt").write_text("a document the team may train on")
    os.symlink(outside / "secret.txt", allowed / "innocent.txt")  # a link in an allowed root, out of it
    (allowed / "tasks.jsonl").write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    monkeypatch.setenv("FORGE_ALLOWED_DATA_ROOTS", str(allowed))
    return allowed, outside


def _problems(spec: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        build_spec(spec)
    return {p.path: p.message for p in exc.value.problems}


def test_every_kind_of_path_outside_the_roots_is_refused_before_anything_runs(layout):
    allowed, outside = layout
    for path in ("/etc/passwd", str(outside), str(allowed / ".." / "outside" / "secret.txt")):
        got = _problems({"kind": "tokenizer", "name": "t", "sources": [{"path": path}]})
        assert "outside the allowed data roots" in got["sources[0].path"], got
    got = _problems({"kind": "eval", "name": "e", "models": [str(outside)],
                     "tasks": [{"name": "x", "path": str(outside / "t.jsonl")}], "harness_include": [str(outside)]})
    assert {"tasks[0].path", "harness_include[0]", "models[0]"} <= set(got), got
    got = _problems({"kind": "data", "name": "d", "sources": [{"path": str(allowed / "doc.txt")}],
                     "clean": {"decontaminate": ["/etc/hosts"]}})
    assert "clean.decontaminate[0]" in got, got
    got = _problems({"kind": "vlm", "name": "v", "tokenizer": "tok", "data": ["/etc/x.jsonl"], "eval_vqa": "/etc/y"})
    assert {"data[0]", "eval_vqa"} <= set(got), got
    build_spec({"kind": "tokenizer", "name": "t", "sources": [{"path": str(allowed / "doc.txt")}]})  # inside: fine


def test_a_symlink_or_a_glob_reaching_out_is_caught_file_by_file(layout):
    allowed, _ = layout
    for path in (str(allowed / "innocent.txt"), str(allowed / "*.txt"), str(allowed)):
        with pytest.raises(PathNotAllowed, match=r"secret\.txt\)? is outside the allowed data roots"):
            expand_source(SourceSpec(path=path, include=["*.txt"]))
    from forge_ray.eval.tasks import load_rows
    from forge_ray.spec.stages import TaskSpec

    os.symlink(layout[1] / "secret.txt", allowed / "leak.jsonl")
    with pytest.raises(PathNotAllowed):
        load_rows(TaskSpec(name="leak", path=str(allowed / "leak.jsonl")))
    assert load_rows(TaskSpec(name="ok", path=str(allowed / "tasks.jsonl")))[1][0]["answer"] == "a"


def test_images_and_imports_outside_are_refused(layout, tmp_path):
    from forge_ray.models.importer import import_model
    from forge_ray.runs import Storage
    from forge_ray.vlm.data import load_image

    allowed, outside = layout
    with pytest.raises(PathNotAllowed, match="image"):
        load_image(str(outside / "secret.txt"), str(allowed), 16)
    with pytest.raises(PathNotAllowed, match="image"):
        load_image("../outside/secret.txt", str(allowed), 16)
    with pytest.raises(PathNotAllowed, match="imported model directory"):
        import_model(outside, "stolen", Storage(str(tmp_path / "runs")))
    assert not (tmp_path / "runs" / "stolen").exists()


def test_validate_reports_it_with_the_key_and_the_cli_exits_2(layout, tmp_path):
    import subprocess
    import sys

    spec = {"kind": "tokenizer", "name": "t", "vocab_size": 300, "sources": [{"path": "/etc/passwd"}]}
    pre = api.validate(spec, storage=str(tmp_path / "runs"))
    assert not pre.ok and any(e["path"] == "sources[0].path" and "allowed data roots" in e["message"] for e in pre.errors)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-m", "forge_ray.cli", "run", str(tmp_path / "spec.json"), "--storage",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120, env=os.environ)
    assert out.returncode == 2 and "sources[0].path" in out.stderr and "FORGE_ALLOWED_DATA_ROOTS" in out.stderr
    assert not (tmp_path / "runs" / "t").exists()


def test_unset_single_user_use_reads_anything_but_dotdot(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGE_ALLOWED_DATA_ROOTS", raising=False)
    require_allowed("/etc/hosts")
    build_spec({"kind": "tokenizer", "name": "t", "sources": [{"path": "/etc/hosts"}]})
    got = _problems({"kind": "tokenizer", "name": "t", "sources": [{"path": "a/../../etc"}]})
    assert "climbs out of its directory" in got["sources[0].path"]
