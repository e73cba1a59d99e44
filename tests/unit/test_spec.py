"""Spec loading: strict keys with suggestions and lines, types, bounds, env vars, overrides, schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from forge_ray.spec import STAGES, SpecError, build_spec, load_spec, schema, spec_to_dict, spec_to_yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "jobs" / "configs").rglob("*.yaml"))
TOK = {"kind": "tokenizer", "name": "t", "sources": [{"path": "corpus/"}]}


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(exc: SpecError) -> dict[str, str]:
    return {p.path: str(p) for p in exc.value.problems}


def test_every_kind_has_a_tiny_config():
    tiny = {p.stem for p in (REPO / "jobs/configs/tiny").glob("*.yaml")}
    assert set(STAGES) - {"pipeline"} <= tiny


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_checked_in_configs_load_and_match_the_schema(path):
    spec = load_spec(path, env={})
    assert spec.kind in STAGES and spec.name
    jsonschema.validate(yaml.safe_load(spec_to_yaml(spec)), schema(spec.kind))
    jsonschema.validate(spec_to_dict(spec), schema())


def test_unknown_key_names_key_line_and_suggestion(tmp_path):
    p = write(tmp_path, "kind: tokenizer\nname: t\nsources:\n  - path: x\nvocab_sise: 100\n")
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    text = problems(exc)["vocab_sise"]
    assert "unknown key 'vocab_sise'" in text and "did you mean 'vocab_size'" in text
    assert f"{p}:5" in text


def test_nested_errors_are_all_reported_with_paths(tmp_path):
    p = write(tmp_path, """\
kind: pretrain
name: p
tokenizer: tok
data: [{path: d, weigth: 2}]
train:
  max_steps: many
  zero_stage: 5
optim: {lr: -1}
""")
    with pytest.raises(SpecError) as exc:
        load_spec(p)
    found = problems(exc)
    assert "did you mean 'weight'" in found["data[0].weigth"]
    assert "must be int, got str 'many'" in found["train.max_steps"] and f"{p}:6" in found["train.max_steps"]
    assert "must be one of 0 | 1 | 2 | 3" in found["train.zero_stage"]
    assert "must be > 0" in found["optim.lr"]
    assert len(found) == 4


def test_unknown_kind_suggests(tmp_path):
    with pytest.raises(SpecError) as exc:
        build_spec({"kind": "pretrian", "name": "x"})
    assert "did you mean 'pretrain'" in str(exc.value)


def test_missing_required_and_bad_name():
    with pytest.raises(SpecError) as exc:
        build_spec({"kind": "sft", "name": "has space", "data": [{"path": "x"}]})
    found = problems(exc)
    assert "is required" in found["base"]
    assert "not a valid run name" in found["name"]


def test_cross_field_checks():
    with pytest.raises(SpecError) as exc:
        build_spec({**TOK, "kind": "pretrain", "tokenizer": "t", "data": [{"path": "x"}],
                    "model": {"hidden_size": 100, "num_heads": 3}})
    assert "not divisible by num_heads=3" in problems(exc)["model.hidden_size"]


def test_env_expansion_with_default_and_missing():
    raw = {"kind": "tokenizer", "name": "t", "sources": [{"path": "${CORPUS:-/data/default}/docs"}]}
    assert build_spec(raw, env={}).sources[0].path == "/data/default/docs"
    assert build_spec(raw, env={"CORPUS": "/mnt/c"}).sources[0].path == "/mnt/c/docs"
    with pytest.raises(SpecError) as exc:
        build_spec({**raw, "sources": [{"path": "${NOPE}/x"}]}, env={})
    assert "NOPE is not set" in problems(exc)["sources[0].path"]


def test_a_value_that_is_one_env_reference_takes_its_yaml_type():
    raw = {**TOK, "vocab_size": "${VOCAB:-1024}", "description": "${NOTE:-512}"}
    assert build_spec(raw, env={}).vocab_size == 1024
    assert build_spec(raw, env={"VOCAB": "2048"}).vocab_size == 2048
    assert build_spec({**raw, "description": "run ${N:-3}"}, env={}).description == "run 3"  # text stays text
    with pytest.raises(SpecError) as exc:
        build_spec(raw, env={"VOCAB": "many"})
    assert "must be int" in problems(exc)["vocab_size"]


def test_overrides_are_typed_and_validated(tmp_path):
    p = write(tmp_path, yaml.safe_dump(TOK))
    spec = load_spec(p, ["vocab_size=1024", "sources.0.format=chat", "special_tokens.extra=[<x>, <y>]"])
    assert spec.vocab_size == 1024 and spec.sources[0].format == "chat"
    assert spec.special_tokens.extra == ["<x>", "<y>"]
    with pytest.raises(SpecError) as exc:
        load_spec(p, ["vocab_size=10"])
    assert "--set vocab_size=10: must be >= 300" in problems(exc)["vocab_size"]
    with pytest.raises(SpecError) as exc:
        load_spec(p, ["vocab_sized=10"])
    assert "did you mean 'vocab_size'" in str(exc.value)
    with pytest.raises(SpecError):
        load_spec(p, ["no-equals-sign"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads ``5e-5`` as a string; in a float field, in a file or a --set, it is 5e-05."""
    p = write(tmp_path, "kind: rl\nname: r\npolicy: p\nprompts: [{path: x.jsonl}]\noptim: {lr: 5e-5}\n")
    assert load_spec(p).optim.lr == 5e-5
    assert load_spec(p, ["optim.lr=1E-4", "kl_coef=2e-3"]).optim.lr == 1e-4
    with pytest.raises(SpecError) as exc:
        load_spec(p, ["optim.lr=fast"])
    assert "must be float" in problems(exc)["optim.lr"]


def test_pipeline_references_and_names():
    stage = lambda name, **kw: {"kind": "sft", "name": name, "data": [{"path": "x"}], **kw}  # noqa: E731
    with pytest.raises(SpecError) as exc:
        build_spec({"kind": "pipeline", "name": "p",
                    "stages": [stage("a", base="b"), stage("b", base="base0"), stage("b", base="a")]})
    found = problems(exc)
    assert "runs later in the pipeline" in found["stages[0].base"]
    assert "used twice" in found["stages[2].name"]
    with pytest.raises(SpecError) as exc:
        build_spec({"kind": "pipeline", "name": "p", "stages": [{"kind": "tokenzer", "name": "x"}]})
    assert "did you mean 'tokenizer'" in str(exc.value)


def test_spec_round_trips_through_yaml(tmp_path):
    spec = load_spec(REPO / "jobs/configs/tiny/pretrain.yaml", env={})
    again = load_spec(write(tmp_path, spec_to_yaml(spec)), env={})
    assert again == spec


def test_sweep_base_is_validated():
    with pytest.raises(SpecError) as exc:
        build_spec({"kind": "sweep", "name": "s", "base": {"kind": "pretrain", "name": "b", "tokenizer": "t",
                                                           "data": [{"path": "x"}], "optim": {"lrr": 1}},
                    "space": {"optim.lr": {"type": "uniform", "low": 1, "high": 0}}})
    found = problems(exc)
    assert "did you mean 'lr'" in found["base.optim.lrr"]
    assert "must be < high" in found["space.optim.lr.low"]


def test_schema_is_valid_json_schema_and_rejects_unknown_keys():
    full = schema()
    jsonschema.Draft202012Validator.check_schema(full)
    assert {d.get("properties", {}).get("kind", {}).get("const") for d in full["$defs"].values()} >= set(STAGES)
    validator = jsonschema.Draft202012Validator(schema("tokenizer"))
    assert validator.is_valid(TOK)
    assert not validator.is_valid({**TOK, "vocab_sise": 5})
    assert not validator.is_valid({**TOK, "vocab_size": 5})
    json.dumps(full)


def test_problems_in_a_json_spec_without_line_numbers(tmp_path):
    """A JSON file on one line: the loader must still report (it once looped forever here)."""
    p = write(tmp_path, json.dumps({"kind": "pretrain", "name": "x", "tokenizer": "t", "dataset": "d",
                                    "model": {"preset": "tiny", "hiden_size": 64}}), "spec.json")
    with pytest.raises(SpecError) as exc:
        load_spec(p, env={})
    assert "hiden_size" in problems(exc)["model.hiden_size"] and "hidden_size" in problems(exc)["model.hiden_size"]


def test_paths_that_climb_out_with_dotdot_are_refused(tmp_path, monkeypatch):
    bad = {"kind": "tokenizer", "name": "t", "sources": [{"path": "corpus/../../../etc"}]}
    with pytest.raises(SpecError) as exc:
        build_spec(bad)
    assert "climbs out of its directory" in problems(exc)["sources[0].path"]
    bad_eval = {"kind": "eval", "name": "e", "models": ["m"], "tasks": [{"name": "x", "path": "../secrets.jsonl"}]}
    with pytest.raises(SpecError) as exc:
        build_spec(bad_eval)
    assert "FORGE_ALLOWED_PATHS" in str(exc.value)
    build_spec({**bad, "sources": [{"path": str(tmp_path / "corpus")}]})  # absolute, no '..': fine
    monkeypatch.setenv("FORGE_ALLOWED_PATHS", str(tmp_path))
    build_spec({**bad, "sources": [{"path": str(tmp_path / "a" / ".." / "corpus")}]})  # allowed prefix


RL = {"kind": "rl", "name": "r", "policy": "p", "prompts": [{"path": "x.jsonl"}]}


def test_an_rl_recipe_expands_into_settings_the_spec_records():
    spec = build_spec({**RL, "recipe": "dapo", "rollout": {"max_new_tokens": 40}, "clip_eps_high": 0.3})
    assert spec.clip_eps == 0.2 and spec.clip_eps_high == 0.3  # the spec's own value wins over the recipe's
    assert spec.dynamic_sampling.enabled and spec.overlong.buffer == 10 and spec.kl_coef == 0.0
    stored = yaml.safe_load(spec_to_yaml(spec))
    assert stored["recipe"] == "dapo" and stored["overlong"]["buffer"] == 10  # recorded expanded
    assert build_spec(stored) == spec  # and the record loads back to the same settings
    gspo = build_spec({**RL, "recipe": "gspo"})
    assert (gspo.policy_loss, gspo.clip_eps, gspo.loss_aggregation) == ("gspo", 3e-4, "seq-mean-token-mean")
    dr = build_spec({**RL, "recipe": "dr_grpo"})
    assert not dr.std_normalize and dr.loss_aggregation == "seq-mean-token-sum-norm"
    with pytest.raises(SpecError) as exc:
        build_spec({**RL, "recipe": "dappo"})
    assert "did you mean 'dapo'" in str(exc.value)


def test_rl_settings_checked_against_the_algorithm():
    with pytest.raises(SpecError) as exc:
        build_spec({**RL, "algo": "ppo", "dynamic_sampling": {"enabled": True}, "overlong": {"buffer": 32}})
    found = problems(exc)
    assert "no groups of samples" in found["dynamic_sampling.enabled"]
    assert "below rollout.max_new_tokens (32)" in found["overlong.buffer"]


def test_a_key_that_is_a_python_keyword():
    spec = build_spec({**RL, "async": {"max_staleness": 1}})
    assert spec.async_.max_staleness == 1
    assert spec_to_dict(spec)["async"] == {"max_staleness": 1}
    assert "async" in schema("rl")["$defs"]["RLStage"]["properties"]
    with pytest.raises(SpecError) as exc:
        build_spec({**RL, "async_": {"max_staleness": 1}})
    assert "unknown key 'async_'" in str(exc.value)


def test_forge_only_rl_settings_are_refused_for_openrlhf_and_async_for_colocated_engines():
    with pytest.raises(SpecError) as exc:
        build_spec({**RL, "engine": "openrlhf", "recipe": "dapo", "async": {"max_staleness": 1}})
    found = problems(exc)
    for key in ("dynamic_sampling.enabled", "overlong.buffer", "async.max_staleness"):
        assert "not passed to OpenRLHF" in found[key], found
    with pytest.raises(SpecError) as exc:
        build_spec({**RL, "colocate": {"all": True}, "async": {"max_staleness": 1}})
    assert "cannot generate the next batch" in problems(exc)["async.max_staleness"]
