"""`forge validate` finds what `forge run` would refuse: inputs of the wrong kind (also between
a pipeline's stages), workers no node can hold (named by the knob, with the cluster's
resources), and a run that failed on a config error takes its corrected spec."""

from __future__ import annotations

import json

from forge_ray import api
from forge_ray.runs import RunError, Storage
from forge_ray.spec.sections import ResourcesSpec
from forge_ray.train.preflight import resource_problems


def _succeeded(store: Storage, name: str, kind: str, outputs: dict) -> None:
    run = store.run(name)
    run.create_or_resume(kind, f"kind: {kind}\nname: {name}\n", [])
    run.succeed({}, outputs)


def _errors(pre) -> dict[str, str]:
    return {e["path"]: e["message"] for e in pre.errors}


def test_an_input_run_of_the_wrong_kind_is_named_with_what_the_field_needs(tmp_path):
    store = Storage(str(tmp_path))
    _succeeded(store, "an-eval", "eval", {"report": "report"})
    _succeeded(store, "a-model", "sft", {"model": "model"})
    spec = {"kind": "pretrain", "name": "p", "tokenizer": "a-model", "dataset": "an-eval"}
    got = _errors(api.validate(spec, storage=str(tmp_path)))
    assert "a 'eval' run" in got["dataset"] and "'data'" in got["dataset"], got
    assert "a 'sft' run" in got["tokenizer"] and "'tokenizer'" in got["tokenizer"], got
    rl = {"kind": "rl", "name": "r", "policy": "a-model", "reward_model": "a-model",
          "prompts": [{"path": str(tmp_path), "format": "prompt_answer"}]}
    assert "'reward_model'" in _errors(api.validate(rl, storage=str(tmp_path)))["reward_model"]


def test_a_pipeline_stage_naming_an_earlier_stage_of_the_wrong_kind_is_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    pipe = {"kind": "pipeline", "name": "pipe", "stages": [
        {"kind": "tokenizer", "name": "tok", "sources": [{"path": str(tmp_path / "docs")}]},
        {"kind": "pretrain", "name": "pre", "tokenizer": "tok", "dataset": "tok"}]}
    got = _errors(api.validate(pipe, storage=str(tmp_path / "runs")))
    assert list(got) == ["stages[1].dataset"] and "a 'tokenizer' run" in got["stages[1].dataset"], got


def test_workers_no_node_can_hold_are_refused_by_the_right_knob():
    nodes = [{"CPU": 2.0, "memory": 8 * 1024**3}, {"CPU": 4.0, "memory": 16 * 1024**3}]
    assert resource_problems(ResourcesSpec(num_workers=3, cpus_per_worker=2), nodes) == []
    [p] = resource_problems(ResourcesSpec(cpus_per_worker=1000), nodes)
    assert p.path == "resources.cpus_per_worker" and "1000 CPU" in p.message and "node 1: 4 CPU" in p.message
    [p] = resource_problems(ResourcesSpec(num_workers=4096), nodes)
    assert p.path == "resources.num_workers" and "holds 6" in p.message and "<=6" in p.hint
    [p] = resource_problems(ResourcesSpec(gpus_per_worker=1), nodes)
    assert p.path == "resources.gpus_per_worker"
    [p] = resource_problems(ResourcesSpec(memory_per_worker_gb=32), nodes)
    assert p.path == "resources.memory_per_worker_gb"


def test_4096_workers_are_not_blamed_on_memory(tmp_path):
    store = Storage(str(tmp_path))
    _succeeded(store, "tok", "tokenizer", {"tokenizer": "tokenizer"})
    _succeeded(store, "corpus", "data", {"dataset": "dataset"})
    spec = {"kind": "pretrain", "name": "p", "tokenizer": "tok", "dataset": "corpus",
            "resources": {"num_workers": 4096}}
    assert not any("GB per worker" in m for m in _errors(api.validate(spec, storage=str(tmp_path))).values())


def test_a_run_that_failed_on_a_config_error_takes_the_corrected_spec(tmp_path):
    store = Storage(str(tmp_path))
    run = store.run("p")
    run.create_or_resume("pretrain", "kind: pretrain\nname: p\nresources: {cpus_per_worker: 1000}\n", [])
    run.fail(RunError("config", "no node can hold one worker"))
    pre = api.validate({"kind": "pretrain", "name": "p", "tokenizer": "t", "dataset": "d"}, storage=str(tmp_path),
                       check_inputs=False)
    assert pre.ok and any("replaces its spec" in w for w in pre.warnings), pre
    manifest = run.create_or_resume("pretrain", "kind: pretrain\nname: p\n", [])
    assert run.read_text("spec.yaml") == "kind: pretrain\nname: p\n" and (tmp_path / "p" / "spec.1.yaml").exists()
    assert manifest["attempts"] == 2
    (tmp_path / "p" / "model").mkdir()  # once it produced something, a changed spec is refused again
    (tmp_path / "p" / "model" / "config.json").write_text(json.dumps({}))
    run.fail(RunError("runtime", "later"))
    import pytest

    from forge_ray.runs import RunExistsError

    with pytest.raises(RunExistsError):
        run.create_or_resume("pretrain", "kind: pretrain\nname: p\nseed: 3\n", [])


def test_a_sweeps_base_with_missing_inputs_is_refused_before_any_trial(tmp_path):
    sweep = {"kind": "sweep", "name": "s", "base": {"kind": "pretrain", "name": "b", "tokenizer": "no-tok",
                                                     "dataset": "no-data"},
             "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    got = _errors(api.validate(sweep, storage=str(tmp_path)))
    assert "does not exist" in got["base.tokenizer"] and "does not exist" in got["base.dataset"], got


def test_one_report_holds_type_errors_and_missing_inputs_together(tmp_path):
    spec = {"kind": "pretrain", "name": "p", "tokenizer": "no-tok", "dataset": "no-data", "trian": {},
            "optim": {"lr": -1}}
    got = _errors(api.validate(spec, storage=str(tmp_path)))
    assert {"trian", "optim.lr", "tokenizer", "dataset"} <= set(got), got
    sft = {"kind": "sft", "name": "s", "base": "no-base", "optim": {"lr": -1},
           "data": [{"path": str(tmp_path / "missing.jsonl"), "format": "chat"}]}
    got = _errors(api.validate(sft, storage=str(tmp_path)))
    assert {"optim.lr", "base", "data[0].path"} <= set(got), got
