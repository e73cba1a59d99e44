"""The demo pipeline end to end (what `make demo` runs): every stage succeeds with its
lineage, pre-training and SFT learn, and the held-out fact QA figures are reported.

Not asserted yet: that SFT answers held-out facts *far* better than the pre-trained-only
model. With the `tiny` preset and 18 questions the gap is real in some runs (0.28 vs 0.00)
and absent in others (0.11 vs 0.11), so an assertion would be a coin toss; see the README."""

from __future__ import annotations

import pytest

from tests.conftest import forge, read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(ray_cluster, demo_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("demo-runs")
    result = forge("run", "jobs/configs/demo.yaml", "--storage", str(storage),
                   env={"FORGE_DEMO_DATA": str(demo_data), "RAY_ADDRESS": ray_cluster["gcs"]}, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return storage


def test_every_stage_succeeded_with_lineage(demo):
    pipe = read_json(demo / "demo" / "manifest.json")
    assert [s["status"] for s in pipe["stages"]] == ["succeeded"] * len(pipe["stages"])
    assert read_json(demo / "demo-sft" / "manifest.json")["parents"] == ["demo-pretrain", "demo-sft-data"]
    assert set(read_json(demo / "demo-pretrain" / "manifest.json")["parents"]) == {"demo-corpus", "demo-tokenizer"}


def test_training_stages_learned_and_qa_is_reported(demo, demo_data):
    from forge_ray.eval.qa import qa_accuracy

    for run, drop in (("demo-pretrain", 3.0), ("demo-sft", 0.5)):
        m = read_json(demo / run / "manifest.json")["metrics"]
        assert m["first_loss"] - m["loss"] > drop, (run, m["first_loss"], m["loss"])
    eval_path = demo_data / "eval.jsonl"
    sft = qa_accuracy(demo / "demo-sft" / "model", eval_path)
    pretrained = qa_accuracy(demo / "demo-pretrain" / "model", eval_path)
    print(f"held-out fact QA: pre-trained {pretrained['accuracy']:.2f}, SFT {sft['accuracy']:.2f}")
    assert sft["n"] == pretrained["n"] == 18
