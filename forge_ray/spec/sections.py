"""Spec sections shared by several stages: data sources, resources, model, optimiser, trainer.

Each section is a small dataclass with defaults that run on a 2-core CPU. A ``check()``
method returns cross-field problems as ``(subpath, message, hint)`` tuples; the loader in
:mod:`forge_ray.spec.typed` reports them together with type errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forge_ray.spec.typed import opt

SourceType = Literal["auto", "jsonl", "json", "parquet", "csv", "text"]
RowFormat = Literal["text", "chat", "preference", "prompt_answer", "image_text"]


@dataclass(kw_only=True)
class SourceSpec:
    """One input: a file, a glob, or a directory tree, read as rows of a given format — or the
    corpus of an earlier run (``run: NAME``: an ``augment`` run's corpus, a ``data`` run's docs)."""

    path: str = opt("", "file, directory or glob; any pyarrow.fs URI")
    run: str | None = opt(None, "instead of path: an augment or data run whose corpus to read (a parent in lineage)")
    type: SourceType = opt("auto", "file type; 'auto' infers from the extension, directories are 'text'")
    format: RowFormat = opt("text", "row schema: text, chat (messages), preference (prompt/chosen/rejected), "
                                    "prompt_answer (RL), image_text")
    field: str = opt("text", "for format 'text' in jsonl/json/parquet/csv: the column holding the text")
    include: list[str] = opt(["**/*.md", "**/*.txt", "**/*.py", "**/*.rst", "**/*.yaml", "**/*.json", "**/*.c",
                              "**/*.h", "**/*.js", "**/*.ts", "**/*.go", "**/*.rs", "**/*.java", "**/*.sql"],
                             "for directory trees: glob patterns of files to read")
    exclude: list[str] = opt([], "for directory trees: glob patterns to skip")
    weight: float = opt(1.0, "relative sampling weight when several sources are mixed", gt=0)
    dedup: bool | None = opt(None, "whether deduplication may remove this source's rows; unset: yes, except for an "
                                   "augment run's corpus (it repeats facts on purpose)")

    def check(self):
        if self.run:
            from forge_ray.spec.base import RUN_NAME

            if not RUN_NAME.match(self.run):
                yield "run", f"{self.run!r} is not a valid run name", "letters, digits, '-', '_' or '.'"
            return
        if not self.path:
            yield "path", "must not be empty", "give a file, directory or glob (or `run:` an earlier run)"
        yield from path_problems("path", [self.path])


def path_problems(key: str, paths: list[str]):
    """``(key, message, hint)`` for each path a spec may not name (see ``forge_ray.allowed_paths``):
    outside ``FORGE_ALLOWED_DATA_ROOTS`` when that is set, or climbing out with ``..``."""
    from forge_ray.allowed_paths import path_problem

    for i, path in enumerate(paths):
        problem = path_problem(path) if path else None
        if problem:
            yield (key if len(paths) == 1 and key == "path" else f"{key}[{i}]"), *problem


@dataclass(kw_only=True)
class ResourcesSpec:
    """Where the work runs: number of Ray Train workers and what each one gets."""

    num_workers: int = opt(1, "Ray Train workers (data-parallel ranks)", ge=1, le=4096)
    cpus_per_worker: float = opt(1.0, "CPUs reserved per worker", gt=0)
    gpus_per_worker: float = opt(0.0, "GPUs per worker; 0 on CPU machines", ge=0)
    memory_per_worker_gb: float | None = opt(None, "memory to reserve per worker; unset: not reserved", gt=0)


@dataclass(kw_only=True)
class ModelSpec:
    """A model: a preset name, optionally with fields overridden."""

    preset: str = opt("tiny", "registry preset: tiny, tiny-moe, 125m, 1b, 8b, moe-small, moe-medium, …")
    arch: Literal["preset", "dense", "moe"] = opt("preset", "dense (Llama-style) or moe; 'preset' keeps the preset's")
    hidden_size: int | None = opt(None, "width; unset keeps the preset's", ge=8)
    num_layers: int | None = opt(None, "transformer blocks", ge=1)
    num_heads: int | None = opt(None, "attention heads", ge=1)
    num_kv_heads: int | None = opt(None, "key/value heads (grouped-query attention)", ge=1)
    intermediate_size: int | None = opt(None, "MLP width", ge=1)
    max_seq_len: int | None = opt(None, "longest sequence the position embedding supports", ge=8)
    num_experts: int | None = opt(None, "MoE: experts per layer", ge=1)
    experts_per_token: int | None = opt(None, "MoE: top-k routing", ge=1)
    router_aux_loss_coef: float | None = opt(None, "MoE: load-balancing loss weight", ge=0)
    router_z_loss_coef: float | None = opt(None, "MoE: router z-loss weight", ge=0)
    family: str | None = opt(None, "transformers family of a from-scratch model: llama (dense default), mistral, "
                              "qwen2, qwen3, gemma2, gemma3, phi3, olmo2; mixtral (MoE default), qwen3_moe")

    def check(self):
        if self.hidden_size and self.num_heads and self.hidden_size % self.num_heads:
            yield "hidden_size", f"{self.hidden_size} is not divisible by num_heads={self.num_heads}", ""
        if self.num_heads and self.num_kv_heads and self.num_heads % self.num_kv_heads:
            yield "num_kv_heads", f"num_heads={self.num_heads} is not a multiple of {self.num_kv_heads}", ""
        if self.num_experts and self.experts_per_token and self.experts_per_token > self.num_experts:
            yield "experts_per_token", f"{self.experts_per_token} > num_experts={self.num_experts}", ""
        if self.family is not None:
            from forge_ray.models.families import FROM_SCRATCH
            from forge_ray.models.registry import PRESETS

            arch = self.arch if self.arch != "preset" else PRESETS[self.preset]().arch if self.preset in PRESETS else None
            if self.family not in FROM_SCRATCH:
                yield "family", f"{self.family!r} cannot be built from scratch", f"one of: {', '.join(FROM_SCRATCH)}"
            elif arch and FROM_SCRATCH[self.family].moe != (arch == "moe"):
                kind, other = ("Mixture-of-Experts", "dense") if FROM_SCRATCH[self.family].moe else ("dense", "MoE")
                yield "family", f"{self.family!r} is a {kind} family but the model is {other}", \
                    "pick a preset or arch of the family's kind"


@dataclass(kw_only=True)
class OptimSpec:
    """AdamW with warmup and a decay schedule."""

    lr: float = opt(1e-3, "peak learning rate (no upper bound: a sweep may probe absurd ones)", gt=0)
    min_lr_ratio: float = opt(0.1, "final lr as a fraction of the peak", ge=0, le=1)
    weight_decay: float = opt(0.1, "decoupled weight decay", ge=0)
    beta1: float = opt(0.9, "Adam beta1", ge=0, lt=1)
    beta2: float = opt(0.95, "Adam beta2", ge=0, lt=1)
    eps: float = opt(1e-8, "Adam epsilon", gt=0)
    warmup_steps: int = opt(10, "linear warmup steps", ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = opt("cosine", "decay after warmup; wsd = warmup-stable-decay")
    decay_fraction: float = opt(0.2, "wsd: fraction of steps spent decaying", gt=0, le=1)
    grad_clip: float = opt(1.0, "clip the global grad norm to this; 0 disables", ge=0)


@dataclass(kw_only=True)
class TrainSpec:
    """The step loop: batch shape, length, ZeRO stage, checkpointing and evaluation cadence."""

    max_steps: int = opt(100, "optimizer steps", ge=1)
    micro_batch_size: int = opt(8, "sequences per worker per micro-step", ge=1)
    grad_accum: int = opt(1, "micro-steps per optimizer step", ge=1)
    seq_len: int = opt(128, "tokens per packed sequence", ge=8)
    zero_stage: Literal[0, 1, 2, 3] = opt(0, "DeepSpeed ZeRO stage")
    offload: Literal["none", "optimizer", "all"] = opt("none", "ZeRO CPU offload of optimizer state (and params at stage 3)")
    precision: Literal["auto", "fp32", "bf16"] = opt("auto", "auto: bf16 on GPUs that support it, fp32 on CPU")
    attention: Literal["auto", "flex", "sdpa", "eager"] = opt(
        "auto", "attention kernel; auto: FlexAttention over the document block mask on CUDA, SDPA on CPU")
    compile: bool = opt(False, "torch.compile each decoder layer, the final norm and the rotary table "
                         "(a run of a few hundred steps or more amortises compiling, on CPU as on GPU)")
    experts: Literal["auto", "grouped", "eager"] = opt(
        "auto", "MoE expert kernel; auto/grouped: tokens sorted by expert, each expert projection one grouped "
        "matmul; eager: transformers' reference loop over experts")
    activation_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    eval_every: int = opt(50, "steps between validation passes; 0 disables", ge=0)
    eval_batches: int = opt(4, "validation batches per pass", ge=1)
    eval_at_start: bool = opt(True, "validate before the first step too: the curve's untrained baseline "
                                    "(off: training starts sooner)")
    checkpoint_every: int = opt(50, "steps between checkpoints; 0: only at the end", ge=0)
    keep_checkpoints: int = opt(2, "checkpoints kept (the newest)", ge=1)
    max_failures: int = opt(2, "worker failures survived by restarting from the last checkpoint", ge=0)
    log_every: int = opt(1, "steps between metric lines", ge=1)
    val_fraction: float = opt(0.05, "held-out share of documents for validation", ge=0, lt=1)
