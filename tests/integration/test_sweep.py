"""An ASHA sweep over the learning rate of a tiny pre-training spec, on the session cluster:
every trial is a normal run with the sweep as a parent, the scheduler stops the poor trials
at an early rung, and the best config is the completed trial with the lowest validation
loss — written out as a spec that runs as is."""

from __future__ import annotations

import json

import pytest
import yaml

from forge_ray import api
from tests.conftest import read_json

pytestmark = pytest.mark.slow

LRS = [3e-3, 1e-3, 3e-5, 1e-5]  # good ones first: the poor ones meet recorded results at the rungs
# (ASHA is asynchronous: the second of two concurrent trials may be cut at a rung too)


@pytest.fixture(scope="module")
def sweep(ray_connected, demo_runs):
    spec = {"kind": "sweep", "name": "sweep-lr", "metric": "val_loss", "mode": "min", "num_samples": 1,
            "max_concurrent": 2, "scheduler": "asha", "grace_period": 5, "reduction_factor": 2,
            "space": {"optim.lr": {"type": "grid", "values": LRS}},
            "base": {"kind": "pretrain", "name": "sweep-lr-trial", "tokenizer": "demo-tokenizer",
                     "dataset": "demo-corpus", "model": {"preset": "tiny", "num_layers": 1},
                     "optim": {"lr": 1e-3, "warmup_steps": 2},
                     "train": {"max_steps": 30, "micro_batch_size": 4, "seq_len": 64, "eval_every": 5,
                               "eval_batches": 2, "checkpoint_every": 0},
                     "resources": {"num_workers": 1}}}
    info = api.run(spec, storage=str(demo_runs), show_progress=False)
    assert info.status == "succeeded", info
    return demo_runs / "sweep-lr"


def test_asha_stops_poor_trials_and_picks_the_best_completed(sweep, demo_runs):
    results = json.loads((sweep / "results.json").read_text())
    trials = results["trials"]
    print("sweep:", [(t["config"]["optim.lr"], t["steps"], round(t["val_loss"] or -1, 3), t["completed"])
                     for t in trials])
    assert sorted(t["config"]["optim.lr"] for t in trials) == sorted(LRS) and not any(t["error"] for t in trials)
    stopped = [t for t in trials if t["stopped_early"]]
    completed = [t for t in trials if t["completed"]]
    assert stopped and completed  # ASHA cut someone short, someone ran the full budget
    lr_of = {t["config"]["optim.lr"]: t for t in trials}
    # a poor rate meets better results at the first rung and is cut; which of the two is a coin flip
    # (after 5 steps both sit at the untrained loss: 7.602 and 7.591 measured on the demo corpus)
    assert lr_of[1e-5]["stopped_early"] or lr_of[3e-5]["stopped_early"]
    assert results["best"]["config"]["optim.lr"] in (3e-3, 1e-3)
    best = results["best"]
    assert best["val_loss"] == min(t["val_loss"] for t in completed) and best["completed"]
    for t in trials:  # every trial is a run of its own, with the sweep in its lineage
        m = read_json(demo_runs / t["run"] / "manifest.json")
        assert "sweep-lr" in m["parents"] and m["status"] == ("stopped" if t["stopped_early"] else "succeeded")
    best_spec = yaml.safe_load((sweep / "best.yaml").read_text())
    assert best_spec["optim"]["lr"] == best["config"]["optim.lr"] and best_spec["kind"] == "pretrain"
    api.validate(best_spec, storage=str(demo_runs))  # ready to run as is
    assert (sweep / "results.csv").read_text().count("\n") == 5 and (sweep / "sweep.png").stat().st_size > 0
    m = read_json(sweep / "manifest.json")["metrics"]
    assert m["trials"] == 4 and m["stopped_early"] == len(stopped) and m["best.optim.lr"] == best["config"]["optim.lr"]
