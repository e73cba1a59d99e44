"""The ``vlm`` stage: prepare image+text rows with Ray Data, train a LLaVA-layout model with
the same Ray Train + DeepSpeed step loop as pre-training (checkpoints, resume, export), then
answer held-out visual questions greedily and report the accuracy.

    forge run jobs/configs/tiny/vlm.yaml                         # CPU, the demo's shapes
    forge run SPEC --set resources.gpus_per_worker=1             # one GPU
    forge submit SPEC --address http://HEAD:8265 --set resources.num_workers=16   # a cluster
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from forge_ray.runner import Context, StageResult, input_dir
from forge_ray.runs import RunDir
from forge_ray.spec.vlm import VLMStage
from forge_ray.vlm.presets import IMAGE_TOKEN

log = logging.getLogger("forge_ray.vlm")


def run(spec: VLMStage, run: RunDir, ctx: Context) -> StageResult:
    from transformers import AutoConfig, AutoTokenizer

    from forge_ray.models import registry
    from forge_ray.train.job import TokenIds, TrainJob, VisionInputs, storage_root
    from forge_ray.train.stage import _fit, _progress, _summary, _train_dir_for_resume
    from forge_ray.vlm.data import prepare

    ctx.ensure_ray()
    from forge_ray.train.preflight import require_placement

    require_placement(spec.resources)
    vision = spec.vision.resolve()
    with contextlib.ExitStack() as stack:
        tok_src = stack.enter_context(input_dir(ctx, spec.tokenizer, "tokenizer"))
        tok_dir = _tokenizer_with_image_token(Path(tok_src), run)
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        lm_dir = vlm_dir = None
        if spec.language_model:
            lm_dir = str(stack.enter_context(input_dir(ctx, spec.language_model, "model")))
            arch = registry.arch_from_hf(AutoConfig.from_pretrained(lm_dir, trust_remote_code=False))
        elif spec.init_from:
            vlm_dir = str(stack.enter_context(input_dir(ctx, spec.init_from, "model")))
            arch = registry.resolve(spec.model)
        else:
            arch = registry.resolve(spec.model)
        with run.local_dir("data") as data_dir:
            counts = prepare([{"path": p} for p in spec.data], data_dir, spec.val_fraction, tokenizer_dir=tok_dir,
                             image_token=IMAGE_TOKEN, n_image_tokens=vision.n_image_tokens,
                             image_size=vision.image_size, seq_len=spec.train.seq_len, phase=spec.phase)
        run.update(data=counts)
        est = registry.estimate(arch, len(tokenizer), spec.train.seq_len, spec.train.micro_batch_size,
                                spec.resources.num_workers, spec.train.activation_checkpointing)
        data_path = Path(run.file("data"))
        job = TrainJob(
            spec=spec, storage=storage_root(ctx),
            train_files=sorted(str(p) for p in (data_path / "train").glob("*.parquet")),
            val_files=sorted(str(p) for p in (data_path / "val").glob("*.parquet")),
            tokenizer_dir=tok_dir, token_ids=TokenIds.of(tokenizer), arch=arch,
            flops_per_token=est.flops_per_token,  # the language model's share
            init_model_dir=lm_dir, train_dir=_train_dir_for_resume(run),
            vlm=VisionInputs(vision=vision, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                             freeze=tuple(spec.freeze), init_vlm_dir=vlm_dir))
        with _progress(run, spec.train.max_steps, ctx):
            _fit(job, spec, run)
    metrics = _summary(run.metrics(), est)  # the language model's parameter counts
    if spec.eval_vqa:
        metrics.update(answer_questions(Path(run.file("model")), spec.eval_vqa, run))
    return StageResult(metrics=metrics, outputs={"model": "model"})


def _tokenizer_with_image_token(src: Path, run: RunDir) -> str:
    """The tokenizer, with ``<image>`` added as a special token when it has none (saved in
    the run, so the export and every later stage use the same ids)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    if IMAGE_TOKEN in tok.get_vocab():
        return str(src)
    tok = _add_image_token(tok)
    with run.local_dir("tokenizer") as out:
        tok.save_pretrained(str(out))
    return run.file("tokenizer")


def _add_image_token(tok):
    """``<image>`` as one more special token: it gets the next id, after the whole vocabulary."""
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    return tok


def answer_questions(model_dir: Path, path: str, run: RunDir | None = None, batch_size: int = 32) -> dict:
    """Greedy answers of the exported model to held-out ``{image, question, answer}`` rows,
    prompted exactly as training was; exact match after lower-casing. Per-``type`` accuracy
    too, when rows have one. Items go to the run's ``vqa.jsonl``."""
    from forge_ray.vlm.answer import VLMAnswerer

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    answers = VLMAnswerer(model_dir).answer([r["question"] for r in rows], [r["image"] for r in rows],
                                            root=Path(path).parent, batch_size=batch_size)
    items = [{**r, "prediction": a, "correct": a.lower() == str(r["answer"]).lower()} for r, a in zip(rows, answers)]
    metrics = {"vqa_accuracy": sum(i["correct"] for i in items) / max(len(items), 1), "vqa_items": len(items)}
    for kind in sorted({i.get("type") for i in items} - {None}):
        of_kind = [i["correct"] for i in items if i.get("type") == kind]
        metrics[f"vqa_accuracy_{kind}"] = sum(of_kind) / len(of_kind)
    if run is not None:
        run.write_text("vqa.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    log.info("VQA accuracy %.3f on %d held-out questions", metrics["vqa_accuracy"], len(items))
    return metrics
