"""The tokenizer stage end to end through the CLI, on the session's Ray cluster."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import REPO, forge, read_json

pytestmark = pytest.mark.slow
SAMPLES = ["Ünïcödé — naïve café, 日本語のテキスト, emoji 🚀🧪, Ωμέγα", "  two  spaces\tand\ttabs\r\nCRLF\n\n",
           "def part_number(product: str) -> str:\n    return PARTS[product].number  # ≤ 80 cols\n", "<|bos|> literal"]


@pytest.fixture(scope="module")
def tokenizer_run(ray_cluster, demo_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tok-runs")
    env = {"FORGE_DEMO_DATA": str(demo_data), "RAY_ADDRESS": ray_cluster["gcs"]}
    result = forge("run", "jobs/configs/tiny/tokenizer.yaml", "--storage", str(storage), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"storage": storage, "env": env, "dir": storage / "tiny-tokenizer", "stdout": result.stdout}


def test_manifest_records_lineage_metrics_and_outputs(tokenizer_run):
    m = read_json(tokenizer_run["dir"] / "manifest.json")
    assert m["status"] == "succeeded" and m["kind"] == "tokenizer" and m["error"] is None
    assert m["outputs"] == {"tokenizer": "tokenizer"} and len(m["fingerprints"]["sources"]) == 16
    assert m["metrics"]["heldout_docs"] > 0 and m["metrics"]["heldout_roundtrip_exact"] == 1.0
    spec = yaml.safe_load((tokenizer_run["dir"] / "spec.yaml").read_text())
    assert "${" not in json.dumps(spec)  # fully resolved
    lines = (tokenizer_run["dir"] / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["step"] == 0
    assert "succeeded" in (tokenizer_run["dir"] / "run.log").read_text()


def test_loads_with_autotokenizer_and_round_trips_exactly(tokenizer_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_run["dir"] / "tokenizer")
    for text in SAMPLES:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    assert tok.bos_token == "<|bos|>" and tok.eos_token == "<|eos|>" and tok.pad_token == "<|pad|>"
    assert tok.convert_tokens_to_ids("<|assistant|>") != tok.unk_token_id


def test_compresses_better_than_bytes(tokenizer_run, demo_data):
    from transformers import AutoTokenizer

    m = read_json(tokenizer_run["dir"] / "manifest.json")
    assert m["metrics"]["heldout_bytes_per_token"] > 2.0
    tok = AutoTokenizer.from_pretrained(tokenizer_run["dir"] / "tokenizer")
    prompts = [json.loads(line)["prompt"] for line in (demo_data / "eval.jsonl").read_text().splitlines()]
    text = "\n".join(prompts)  # questions never seen by the tokenizer, about held-out products
    assert len(text.encode()) / len(tok.encode(text, add_special_tokens=False)) > 2.0


def test_chat_template_masks_assistant_tokens(tokenizer_run):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_run["dir"] / "tokenizer")
    chat = [{"role": "user", "content": "Which team owns X?"}, {"role": "assistant", "content": "Team Otter"}]
    out = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, keep in zip(out["input_ids"], out["assistant_masks"]) if keep]
    assert tok.decode(masked) == "Team Otter<|end|>"
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|bos|><|user|>Which team owns X?<|end|><|assistant|>"


def test_rerun_is_a_no_op_and_changed_spec_is_refused(tokenizer_run):
    env, storage = tokenizer_run["env"], str(tokenizer_run["storage"])
    before = (tokenizer_run["dir"] / "manifest.json").read_text()
    again = forge("run", "jobs/configs/tiny/tokenizer.yaml", "--storage", storage, env=env)
    assert again.returncode == 0 and (tokenizer_run["dir"] / "manifest.json").read_text() == before
    changed = forge("run", "jobs/configs/tiny/tokenizer.yaml", "--storage", storage, "--set", "vocab_size=1024",
                    env=env)
    assert changed.returncode == 2
    assert "already exists" in changed.stderr and "different spec" in changed.stderr
    assert (tokenizer_run["dir"] / "manifest.json").read_text() == before


def test_runs_and_status_json(tokenizer_run):
    storage = str(tokenizer_run["storage"])
    runs = json.loads(forge("runs", "--storage", storage, "--json").stdout)
    assert [r["name"] for r in runs] == ["tiny-tokenizer"] and runs[0]["status"] == "succeeded"
    status = forge("status", "tiny-tokenizer", "--storage", storage, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["metrics"]["vocab_size"] > 300
    logs = forge("logs", "tiny-tokenizer", "--storage", storage, env={"RAY_ADDRESS": ""})
    assert "run tiny-tokenizer (tokenizer) started" in logs.stdout


def test_pipeline_builds_lineage_and_bad_data_fails_with_exit_2(ray_cluster, demo_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "trunc\n')
    spec = {"kind": "pipeline", "name": "pipe", "stages": [
        {"kind": "tokenizer", "name": "pipe-tok", "vocab_size": 512, "sources": [{"path": str(demo_data / "docs")}]},
        {"kind": "tokenizer", "name": "pipe-bad", "vocab_size": 512, "sources": [{"path": str(bad)}]},
    ]}
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    storage = tmp_path / "runs"
    result = forge("run", str(path), "--storage", str(storage), env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{bad}:2" in result.stderr and "malformed JSON" in result.stderr
    pipe = read_json(storage / "pipe" / "manifest.json")
    assert pipe["status"] == "failed" and [s["status"] for s in pipe["stages"]] == ["succeeded", "failed"]
    failed = read_json(storage / "pipe-bad" / "manifest.json")
    assert failed["error"]["kind"] == "data" and f"{bad}:2" in failed["error"]["message"]
    assert not (storage / "pipe-bad" / "tokenizer").exists()  # nothing partially written
    assert read_json(storage / "pipe-tok" / "manifest.json")["status"] == "succeeded"


def test_demo_config_is_what_make_demo_runs():
    text = (REPO / "Makefile").read_text()
    assert "forge run jobs/configs/demo.yaml" in text
