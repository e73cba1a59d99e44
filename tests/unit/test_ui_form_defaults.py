"""The web form's default path: for each stage kind, the fields show the values the YAML will
hold, the input picker offers only runs that stage accepts, and Form → YAML from the defaults
is a spec that validates on this storage; the arena offers only text models."""

from __future__ import annotations

import yaml

from forge_ray import api
from forge_ray.runs import Storage


def _succeeded(store, name, kind, outputs, parents=()):
    run = store.run(name)
    run.create_or_resume(kind, f"kind: {kind}\nname: {name}\n", list(parents))
    run.succeed({}, outputs)


def test_form_defaults_give_a_valid_spec_and_the_picker_only_fitting_runs(tmp_path):
    from ui.app import App

    store = Storage(str(tmp_path))
    _succeeded(store, "my-tok", "tokenizer", {"tokenizer": "tokenizer"})
    _succeeded(store, "my-corpus", "data", {"dataset": "dataset", "docs": "docs"}, parents=["my-tok"])
    _succeeded(store, "my-eval", "eval", {"report": "report"})
    _succeeded(store, "my-vlm", "vlm", {"model": "model"})
    _succeeded(store, "my-sft", "sft", {"model": "model"})
    app = App(str(tmp_path), address=None)
    name, picker, lr, max_steps, micro, workers, cpus, gpus = app.kind_changed("pretrain")
    assert picker["choices"] == ["my-corpus"] and picker["value"] == "my-corpus"  # data runs only
    spec = yaml.safe_load(app.form_yaml("pretrain", name["value"], picker["value"], "", "tiny", lr["value"],
                                        max_steps["value"], micro["value"], workers["value"], cpus["value"],
                                        gpus["value"]))
    assert spec["tokenizer"] == "my-tok" and spec["dataset"] == "my-corpus" and "data" not in spec
    assert spec["optim"]["lr"] == lr["value"] and spec["train"]["max_steps"] == max_steps["value"]
    pre = api.validate(spec, storage=str(tmp_path))
    assert pre.ok, pre.errors
    assert app.kind_changed("sft")[1]["choices"] == ["my-sft"]  # not the eval, the VLM or the data run
    assert app.kind_changed("data")[1]["choices"] == ["my-tok"]
    assert "my-vlm" not in api.chat_models(str(tmp_path)) and "my-sft" in api.chat_models(str(tmp_path))


def test_submitting_without_a_cluster_names_the_flag(tmp_path, monkeypatch):
    from ui.app import App

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("text")
    spec = f"kind: tokenizer\nname: t\nvocab_size: 300\nsources: [{{path: {tmp_path / 'docs'}}}]\n"
    said = App(str(tmp_path / "runs"), address=None).submit(spec)
    assert "not submitted" in said and "forge ui --address" in said
    assert not (tmp_path / "runs" / "t").exists()
