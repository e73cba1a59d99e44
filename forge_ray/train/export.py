"""HF exports: the final ``model/`` of a run and on-demand exports from any checkpoint.

Why one module: the end-of-run export and ``forge export RUN`` must produce the same
directory (safetensors weights, ``config.json``, tokenizer), loadable by
``AutoModelForCausalLM.from_pretrained`` and vLLM. Both start from a plain state dict:
LoRA adapters are folded in arithmetically (``W + B·A·alpha/r``) so the training model is
never modified, which keeps resumed runs bit-identical. Every checkpoint carries such a
directory under ``hf/`` (written by rank 0 next to DeepSpeed's files), so exporting a
checkpoint never unpickles anything.

    forge export my-run                      # newest checkpoint → my-run/exports/step-N
    forge export my-run --step 200 --out s3://bucket/models/my-run-200
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from forge_ray.compat import deepspeed as deepspeed_compat
from forge_ray.compat.transformers import model_from_config

if TYPE_CHECKING:
    from forge_ray.spec.stages import LoraSpec
    from forge_ray.train.job import TrainJob

HF_SUBDIR = "hf"
_LORA = re.compile(r"^(?P<path>.+)\.lora_(?P<ab>[AB])\.[^.]+\.weight$")


def hf_state_dict(state: dict[str, torch.Tensor], lora: LoraSpec | None) -> dict[str, torch.Tensor]:
    """A training state dict (objective- and peft-wrapped names) → plain HF names, LoRA merged
    (``lora``: the adapters' settings, None when the run trained all weights)."""
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if lora is None:
        return state
    state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    factors: dict[str, dict[str, torch.Tensor]] = {}
    plain: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _LORA.match(key)
        if m:
            factors.setdefault(m["path"], {})[m["ab"]] = value
        else:
            plain[key.replace(".base_layer.", ".")] = value
    scaling = lora.alpha / lora.rank
    for path, ab in factors.items():
        weight = plain[f"{path}.weight"]
        delta = (ab["B"].float() @ ab["A"].float()) * scaling
        plain[f"{path}.weight"] = (weight.float() + delta).to(weight.dtype)
    return plain


def gather_state(engine, objective, zero3: bool, rank: int) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict (objective-level names) on rank 0, None elsewhere; a
    collective under ZeRO-3, where every rank must call it."""
    if zero3:
        state = deepspeed_compat.zero3_full_state_dict(engine)
        return state if rank == 0 else None
    return {k: v.detach().cpu() for k, v in objective.state_dict().items()} if rank == 0 else None


def write_hf_dir(state: dict[str, torch.Tensor], config, tokenizer_dir: str | Path, out: Path,
                 model_class=None, extra_files: dict[str, dict] | None = None) -> None:
    """Write weights (safetensors), config and tokenizer. ``model_class`` is the trained
    ``transformers`` class (a causal LM, or ``…ForSequenceClassification`` for a reward model);
    it is built on the meta device so no second full copy of the weights is allocated."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with torch.device("meta"):
        model = (model_from_config(model_class, config, torch.float32) if model_class else
                 AutoModelForCausalLM.from_config(config, dtype=torch.float32))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"state dict does not match {type(model).__name__}: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if tied:
        model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    end_id = tok.convert_tokens_to_ids("<|end|>") if "<|end|>" in tok.get_vocab() else None
    if end_id is not None and getattr(model, "generation_config", None) is not None:  # not on a reward model
        # a chat turn ends with <|end|>: say so, so HF generate, vLLM and `forge serve` stop there
        eos = getattr(config, "eos_token_id", None) or getattr(getattr(config, "text_config", None), "eos_token_id", None)
        model.generation_config.eos_token_id = [i for i in (eos, end_id) if i is not None]
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    for name, content in (extra_files or {}).items():  # e.g. a VLM's image-processor config
        (out / name).write_text(json.dumps(content, indent=2) + "\n")


def checkpoints(run) -> list[tuple[int, str]]:
    """(step, checkpoint path relative to the run) of every complete checkpoint, oldest first."""
    from pyarrow import fs as pafs

    from forge_ray.train.checkpoint import RECORD

    root = run.file("train")
    try:
        infos = run.storage.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        if info.type == pafs.FileType.File and info.path.endswith("/" + RECORD):
            ckpt_dir = info.path[: -len(RECORD) - 1]
            with run.storage.fs.open_input_stream(info.path) as f:
                step = int(json.loads(f.read())["step"])
            if run.storage.fs.get_file_info(f"{ckpt_dir}/{HF_SUBDIR}/config.json").type == pafs.FileType.File:
                found.append((step, ckpt_dir[len(run.path) + 1:]))
    return sorted(found)


def export_checkpoint(storage, run_name: str, step: int | None = None, out: str | None = None) -> dict:
    """Copy the HF directory of a checkpoint (newest, or at ``step``) to ``out`` (default
    ``RUN/exports/step-N``) after checking the checkpoint's integrity record."""
    from pyarrow import fs as pafs

    from forge_ray.train.checkpoint import verify

    run = storage.run(run_name)
    if not run.exists():
        raise FileNotFoundError(f"no run named {run_name!r} under {storage.uri}")
    found = checkpoints(run)
    if not found:
        raise FileNotFoundError(f"run {run_name!r} has no checkpoint to export yet "
                                "(train.checkpoint_every sets how often one is written)")
    if step is None:
        step, rel = found[-1]
    else:
        matches = [r for s, r in found if s == step]
        if not matches:
            raise FileNotFoundError(f"run {run_name!r} has no checkpoint at step {step}; "
                                    f"checkpoints: {', '.join(str(s) for s, _ in found)}")
        rel = matches[-1]
    with run.fetch_dir(rel) as local:
        verify(local)
        if out is None:
            with run.local_dir(f"exports/step-{step}") as dest:
                shutil.copytree(local / HF_SUBDIR, dest, dirs_exist_ok=True)
            target = run.file(f"exports/step-{step}")
        else:
            fs, path = pafs.FileSystem.from_uri(out) if "://" in out else (pafs.LocalFileSystem(), str(Path(out).resolve()))
            fs.create_dir(path, recursive=True)
            pafs.copy_files(str(local / HF_SUBDIR), path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
            target = out
    return {"run": run_name, "step": step, "checkpoint": rel, "out": target}



def base_model(model):
    """The plain ``transformers`` model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def write_weights(engine, objective, job: TrainJob, rank: int, out: Path) -> dict | None:
    """Rank 0 writes the HF directory of the current weights (LoRA merged) and returns them;
    under ZeRO-3 every rank must call it (the weights are gathered first)."""
    state = gather_state(engine, objective, job.spec.train.zero_stage == 3, rank)
    if rank != 0:
        return None
    state = hf_state_dict(state, job.lora)
    base = base_model(objective.model)
    extra = None
    if job.vlm is not None:
        from forge_ray.vlm.model import processor_files

        extra = processor_files(job.vlm)
    write_hf_dir(state, base.config, job.tokenizer_dir, out, type(base), extra_files=extra)
    return state


def write_probe(model, job: TrainJob, run) -> None:
    """Logits of the trained model on a fixed batch, so an export can be checked against it
    (next-token logits of a language model; the scores of a reward model)."""
    import numpy as np
    import safetensors.torch

    from forge_ray.data.stream import PackedStream

    batch = next(iter(PackedStream(job.train_files, 0, 1, 2, seed=0, shuffle=False)))
    input_ids = torch.as_tensor(np.asarray(batch["input_ids" if "input_ids" in batch else "chosen_ids"]),
                                dtype=torch.long)
    inputs = {"input_ids": input_ids}
    if "pixel_values" in batch:  # a VLM: the same pixels the export will be given
        size = model.config.vision_config.image_size
        pixels = torch.as_tensor(np.asarray(batch["pixel_values"]), dtype=torch.float32)
        inputs["pixel_values"] = pixels.view(-1, 3, size, size)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
    run.write_bytes("export_probe.safetensors", safetensors.torch.save({**inputs, "logits": logits}))


def export_run_model(engine, objective, job: TrainJob, rank: int) -> None:
    """Write the run's ``model/`` (rank 0) and the probe logits of the training model on a
    fixed batch (under ZeRO-3 the module holds only shards, so the probe runs on the
    gathered weights instead)."""
    from forge_ray.runs import Storage

    if rank != 0:
        write_weights(engine, objective, job, rank, Path())  # joins the ZeRO-3 gather; writes nothing
        return
    run = Storage(job.storage).run(job.run_name)
    with run.local_dir("model") as out:
        state = write_weights(engine, objective, job, rank, out)
    probe_model = objective.model
    if job.spec.train.zero_stage == 3:
        base = base_model(objective.model)
        probe_model = model_from_config(type(base), base.config, torch.float32)
        probe_model.load_state_dict(state, strict=False)
        probe_model.tie_weights()
    write_probe(probe_model, job, run)
