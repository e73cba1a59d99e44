"""CLI input handling: exit codes and messages a user (or an agent) can act on."""

from __future__ import annotations

import json

import jsonschema

from tests.conftest import forge


def test_misspelled_key_exits_2_naming_key_and_suggestion(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("kind: tokenizer\nname: t\nsources: [{path: x}]\nvocab_sise: 512\n")
    result = forge("validate", str(spec))
    assert result.returncode == 2
    assert "vocab_sise" in result.stderr and "did you mean 'vocab_size'" in result.stderr and f"{spec}:4" in result.stderr
    as_json = json.loads(forge("validate", str(spec), "--json").stdout)
    assert as_json["ok"] is False and as_json["errors"][0]["path"] == "vocab_sise"


def test_missing_input_run_is_reported_before_running(tmp_path):
    result = forge("validate", "jobs/configs/tiny/sft.yaml", "--storage", str(tmp_path))
    assert result.returncode == 2 and "names run 'tiny-pretrain', which does not exist" in result.stderr


def test_missing_spec_file_and_bad_override(tmp_path):
    assert forge("validate", str(tmp_path / "nope.yaml")).returncode == 2
    bad = forge("validate", "jobs/configs/tiny/tokenizer.yaml", "--set", "vocab_size=abc")
    assert bad.returncode == 2 and "--set vocab_size=abc: must be int" in bad.stderr


def test_run_with_missing_corpus_exits_2(tmp_path):
    result = forge("run", "jobs/configs/tiny/tokenizer.yaml", "--storage", str(tmp_path),
                   env={"FORGE_DEMO_DATA": str(tmp_path / "no-corpus")})
    assert result.returncode == 2 and "sources[0].path" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "tiny-tokenizer").exists()  # refused before a run directory was made
    pre = json.loads(forge("validate", "jobs/configs/tiny/tokenizer.yaml", "--json",
                           env={"FORGE_DEMO_DATA": str(tmp_path / "no-corpus")}).stdout)
    assert {e["path"] for e in pre["errors"]} == {"sources[0].path", "sources[1].path"}


def test_schema_prints_valid_json_schema_for_every_kind():
    result = forge("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    kinds = {d["properties"]["kind"]["const"] for d in schema["$defs"].values() if "kind" in d.get("properties", {})}
    assert kinds == {"tokenizer", "data", "augment", "pretrain", "sft", "dpo", "reward_model", "rl", "eval", "vlm", "sweep", "pipeline"}
    one = json.loads(forge("schema", "pretrain").stdout)
    assert one["$ref"] == "#/$defs/PretrainStage"
    assert forge("schema", "pretrian").returncode == 2


def test_demo_data_cli(tmp_path):
    result = forge("demo-data", str(tmp_path / "d"), "--seed", "3", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["eval"] > 0
    assert (tmp_path / "d" / "docs").is_dir()


def test_model_that_cannot_fit_is_refused_with_the_knob_to_turn(tmp_path):
    result = forge("validate", "jobs/configs/tiny/pretrain.yaml", "--no-inputs", "--storage", str(tmp_path),
                   "--set", "model.preset=8b", "--set", "train.seq_len=512", "--set", "train.micro_batch_size=1",
                   "--set", "train.activation_checkpointing=true", "--set", "resources.memory_per_worker_gb=16",
                   "--json")
    assert result.returncode == 2
    (error,) = json.loads(result.stdout)["errors"]
    assert error["path"] == "model" and "GB per worker at ZeRO stage 0" in error["message"]
    assert "train.zero_stage=3 with resources.num_workers>=" in error["hint"]
    ok = json.loads(forge("validate", "jobs/configs/tiny/pretrain.yaml", "--no-inputs", "--json").stdout)
    assert ok["ok"] and 100_000 < ok["estimates"]["tiny-pretrain"]["params"] < 10_000_000  # 32k vocab assumed
