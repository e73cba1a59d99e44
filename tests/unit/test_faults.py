"""The one fault-injection hook: parsed from one variable, fires once at its point, and a
malformed value is an error naming the variable and key rather than a fault never fired."""

from __future__ import annotations

import json

import pytest

from forge_ray import faults


def test_a_fault_fires_once_at_its_point_and_rank(tmp_path, monkeypatch):
    marker = tmp_path / "m"
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps({"at": "train_step", "step": 3, "rank": 1,
                                                         "marker": str(marker)}))
    fault = faults.planned()
    assert fault == faults.FaultPlan((faults.Fault(at="train_step", step=3, rank=1, marker=str(marker)),))
    assert not fault.due("train_step", 3, rank=0)  # another rank
    assert not fault.due("train_step", 2, rank=1)  # another step
    assert not fault.due("rl_step", 3, rank=1)  # another point
    assert not marker.exists()
    assert fault.due("train_step", 3, rank=1) and marker.exists()
    assert not fault.due("train_step", 3, rank=1)  # the retried run goes on


def test_rank_matters_only_for_trainer_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps({"at": "rl_step", "step": 2, "marker": str(tmp_path / "m")}))
    assert faults.planned().due("rl_step", 2)


def test_a_list_plans_several_faults_each_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps([
        {"at": "rollout_engine", "step": 2, "marker": str(tmp_path / "k")},
        {"at": "rl_step", "step": 3, "marker": str(tmp_path / "c")}]))
    plan = faults.planned()
    assert not plan.due("rl_step", 2) and plan.due("rollout_engine", 2) and not plan.due("rollout_engine", 2)
    assert plan.due("rl_step", 3) and not plan.due("rl_step", 3)
    assert (tmp_path / "k").exists() and (tmp_path / "c").exists()


def test_a_held_step_says_how_long_and_fires_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_FAULT_INJECT", json.dumps({"at": "train_step", "step": 10, "marker": str(tmp_path / "h"),
                                                         "hold_s": 300}))
    plan = faults.planned()
    assert plan.fired("train_step", 9) is None
    assert plan.fired("train_step", 10).hold_s == 300 and plan.fired("train_step", 10) is None


def test_no_variable_no_fault(monkeypatch):
    monkeypatch.delenv("FORGE_FAULT_INJECT", raising=False)
    assert faults.planned() is None


@pytest.mark.parametrize("value, says", [
    ("{not json", "not JSON"),
    ('{"step": 3, "marker": "/tmp/x"}', "at, step, marker"),
    ('{"at": "train_step", "step": 3, "marker": "/tmp/x", "kill_engine_at_step": 2}', "kill_engine_at_step"),
    ('{"at": "eval", "step": 3, "marker": "/tmp/x"}', "'eval'"),
    ('[{"at": "rl_step", "step": 3, "marker": "/tmp/x"}, {"at": "rl_step"}]', "at, step, marker"),
])
def test_a_malformed_fault_names_the_variable_and_the_key(monkeypatch, value, says):
    monkeypatch.setenv("FORGE_FAULT_INJECT", value)
    with pytest.raises(ValueError, match="FORGE_FAULT_INJECT") as err:
        faults.planned()
    assert says in str(err.value)
