"""A failed run tells a program what went wrong (``error.kind`` in its manifest, and the
CLI's exit code), for every kind that can be forced on CPU: a bad spec, bad data, a loss
that goes NaN under an absurd learning rate, and a worker killed with no retries left."""

from __future__ import annotations

import json

import pytest

from forge_ray import api
from tests.conftest import forge, read_json

pytestmark = pytest.mark.slow


def tiny_pretrain(name: str, **over) -> dict:
    spec = {"kind": "pretrain", "name": name, "tokenizer": "demo-tokenizer", "dataset": "demo-corpus",
            "model": {"preset": "tiny", "num_layers": 1}, "optim": {"lr": 3e-3, "warmup_steps": 0},
            "train": {"max_steps": 12, "micro_batch_size": 4, "seq_len": 64, "eval_every": 0, "checkpoint_every": 0},
            "resources": {"num_workers": 1}}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def _failed(demo_runs, name: str) -> dict:
    m = read_json(demo_runs / name / "manifest.json")
    assert m["status"] == "failed"
    return m["error"]


def test_nan_loss_under_an_absurd_learning_rate(ray_connected, demo_runs):
    with pytest.raises(Exception):
        api.run(tiny_pretrain("diag-nan", optim={"lr": 1.0e4, "grad_clip": 0.0}), storage=str(demo_runs),
                show_progress=False)
    error = _failed(demo_runs, "diag-nan")
    assert error["kind"] == "nan_loss" and "loss is" in error["message"] and "optim.lr" in error["hint"], error


def test_a_killed_worker_with_no_retries_is_worker_lost(ray_connected, demo_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps({"at": "train_step", "step": 3, "rank": 0, "marker": str(tmp_path / "k")}))
    with pytest.raises(Exception):
        api.run(tiny_pretrain("diag-killed", train={"max_failures": 0}), storage=str(demo_runs), show_progress=False)
    assert (tmp_path / "k").exists()
    error = _failed(demo_runs, "diag-killed")
    assert error["kind"] == "worker_lost" and "resume" in error["hint"], error


def test_bad_data_and_bad_config_through_the_cli(ray_cluster, demo_runs, tmp_path):
    bad = tmp_path / "chats.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   '{"messages": [{"role": "user", "content": "hi"}\n')
    spec = tmp_path / "sft.json"
    spec.write_text(json.dumps({"kind": "sft", "name": "diag-data", "base": "demo-sft",
                                "data": [{"path": str(bad), "format": "chat"}],
                                "train": {"max_steps": 2, "seq_len": 64, "eval_every": 0, "checkpoint_every": 0,
                                          "val_fraction": 0.0}}))
    out = forge("run", str(spec), "--storage", str(demo_runs), "--json", env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert out.returncode == 2, out.stderr[-2000:]
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "data" and f"{bad}:2" in error["message"], error
    assert _failed(demo_runs, "diag-data")["kind"] == "data"

    spec.write_text(json.dumps({"kind": "pretrain", "name": "diag-config", "tokenizer": "demo-tokenizer",
                                "dataset": "demo-corpus", "model": {"preset": "tiny", "hiden_size": 64}}))
    out = forge("run", str(spec), "--storage", str(demo_runs), "--json")
    assert out.returncode == 2
    error = json.loads(out.stdout)["error"]
    assert error["kind"] == "config" and "hiden_size" in error["message"] and "hidden_size" in error["message"]
