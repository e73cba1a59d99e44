"""`forge import`: a local HF directory becomes a run with fingerprints, parameter count and
architecture; pickle checkpoints, remote code and foreign architectures are refused with the
reason, before anything is loaded."""

from __future__ import annotations

import json

import pytest
import torch

from forge_ray.models.importer import ImportRefused, import_model, inspect
from forge_ray.runs import Storage


def _tiny_model_dir(path):
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from forge_ray.models.registry import PRESETS, hf_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(PRESETS["tiny"](), vocab_size=64, bos_id=1, eos_id=2, pad_id=0))
    model.save_pretrained(path, safe_serialization=True)
    vocab = {f"t{i}": i for i in range(64)}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0"))).save_pretrained(path)
    return model


def test_import_registers_a_run_with_fingerprints(tmp_path):
    model = _tiny_model_dir(tmp_path / "src")
    manifest = import_model(tmp_path / "src", "base-model", Storage(str(tmp_path / "runs")))
    assert manifest["status"] == "succeeded" and manifest["kind"] == "import"
    assert manifest["outputs"] == {"model": "model", "tokenizer": "model"}
    assert manifest["params"] == model.num_parameters()  # counted from the safetensors headers; tied once
    assert manifest["architecture"] == "LlamaForCausalLM" and len(manifest["weight_sha256"]["model.safetensors"]) == 64
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "base-model" / "model", use_safetensors=True)
    torch.testing.assert_close(again.state_dict()["model.norm.weight"], model.state_dict()["model.norm.weight"])


def test_pickle_remote_code_and_foreign_architectures_are_refused(tmp_path):
    src = tmp_path / "pickled"
    _tiny_model_dir(src)
    (src / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, src / "pytorch_model.bin")
    with pytest.raises(ImportRefused, match="pytorch_model.bin: pickle files are never loaded"):
        inspect(src)

    src = tmp_path / "remote"
    _tiny_model_dir(src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(ImportRefused, match="remote code"):
        inspect(src)

    (src / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ImportRefused, match="'GPT2LMHeadModel' is not supported"):
        inspect(src)
