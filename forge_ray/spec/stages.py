"""One dataclass per stage kind. A spec file is one of these with ``kind`` and ``name``.

Inputs from earlier stages are named by **run name** (``tokenizer: demo-tokenizer``): the
run directory of that name under the storage root holds what the stage needs, and the
reference becomes a parent in the new run's lineage. In a ``pipeline`` the stage names are
run names too, so a later stage simply names an earlier one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from forge_ray.spec.augment import AugmentStage
from forge_ray.spec.base import RUN_NAME, StageSpec  # noqa: F401 - re-exported
from forge_ray.spec.rl import ColocateSpec, RLStage, RolloutSpec  # noqa: F401 - re-exported
from forge_ray.spec.rl_eval import EvalStage, TaskSpec  # noqa: F401 - re-exported
from forge_ray.spec.sections import ModelSpec, OptimSpec, ResourcesSpec, SourceSpec, TrainSpec
from forge_ray.spec.typed import opt
from forge_ray.spec.vlm import VisionSpec, VLMStage  # noqa: F401 - re-exported

# ---------------------------------------------------------------------------- tokenizer


@dataclass(kw_only=True)
class SpecialTokens:
    """Special tokens; the chat tokens delimit turns in the chat template."""

    bos: str = opt("<|bos|>", "beginning of sequence")
    eos: str = opt("<|eos|>", "end of sequence / document separator")
    pad: str = opt("<|pad|>", "padding")
    chat: list[str] = opt(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "chat-template tokens")
    extra: list[str] = opt([], "more special tokens, e.g. domain markers")


@dataclass(kw_only=True)
class TokenizerStage(StageSpec):
    """Train a byte-level BPE tokenizer on the organisation's corpus."""

    KIND: ClassVar[str] = "tokenizer"
    sources: list[SourceSpec] = opt(help="corpus to train on (text directories, jsonl fields, …)")
    vocab_size: int = opt(4096, "vocabulary size including special tokens", ge=300, le=1_000_000)
    min_frequency: int = opt(2, "minimum pair frequency for a merge", ge=1)
    special_tokens: SpecialTokens = opt(default_factory=SpecialTokens, help="special tokens")
    chat_template: str | None = opt(None, "Jinja chat template; unset: forge's built-in template")
    heldout_fraction: float = opt(0.05, "share of documents held out to measure bytes/token", ge=0, lt=1)
    max_documents: int | None = opt(None, "cap on documents read (a quick tokenizer on a huge corpus)", ge=1)

    def check(self):
        yield from super().check()
        if not self.sources:
            yield "sources", "needs at least one source", ""


# ---------------------------------------------------------------------------- data


@dataclass(kw_only=True)
class CleanSpec:
    """Cleaning steps, in the order they run."""

    exact_dedup: bool = opt(True, "drop documents whose normalised content hash was seen")
    near_dedup: bool = opt(True, "drop near-duplicates found with MinHash LSH")
    minhash_threshold: float = opt(0.7, "estimated Jaccard similarity of shingles at or above which documents "
                                        "are near-duplicates", gt=0, le=1)
    shingle_size: int = opt(5, "words per shingle; 3 catches lightly edited copies (5% of words changed) at "
                               "threshold 0.6", ge=1)
    num_perm: int = opt(128, "MinHash permutations", ge=16)
    pii: bool = opt(True, "replace emails, phones, IPs, card numbers and keys with typed placeholders")
    min_chars: int = opt(1, "drop documents shorter than this", ge=0)
    max_chars: int | None = opt(None, "drop documents longer than this", ge=1)
    decontaminate: list[str] = opt([], "eval files (jsonl) whose long n-grams must not appear in training data")
    decontam_ngram: int = opt(13, "n-gram length for decontamination", ge=4)

    def check(self):
        from forge_ray.spec.sections import path_problems

        yield from path_problems("decontaminate", self.decontaminate)


@dataclass(kw_only=True)
class DataStage(StageSpec):
    """Prepare a dataset: read, validate, clean, tokenize, pack, write Parquet shards."""

    KIND: ClassVar[str] = "data"
    INPUTS: ClassVar[tuple[str, ...]] = ("tokenizer",)
    sources: list[SourceSpec] = opt(help="inputs, mixed by weight")
    tokenizer: str | None = opt(None, "tokenizer run (or HF tokenizer dir); unset: write cleaned text only")
    on_error: Literal["fail", "skip"] = opt("fail", "bad rows fail the job, or go to quarantine.jsonl")
    max_bad_fraction: float = opt(0.01, "with on_error=skip: fail if more than this share of rows is bad", ge=0, le=1)
    clean: CleanSpec = opt(default_factory=CleanSpec, help="cleaning")
    layout: Literal["auto", "pretrain", "sft", "preference", "prompt"] = opt(
        "auto", "what rows are for; auto: from the sources' format (text → pretrain, chat → sft, …)")
    seq_len: int = opt(256, "packed sequence length in tokens", ge=8)
    packing: bool = opt(True, "sft: pack several conversations per row")
    shard_rows: int = opt(4096, "rows per Parquet shard of the prepared dataset", ge=1)
    val_fraction: float = opt(0.0, "share of documents (by a hash of their id) packed into val/ instead", ge=0, lt=1)
    mix_total: int | None = opt(None, "rows to sample from the weighted mix; unset: all rows once", ge=1)

    def check(self):
        yield from super().check()
        if not self.sources:
            yield "sources", "needs at least one source", ""


# ---------------------------------------------------------------------------- training


@dataclass(kw_only=True)
class LoraSpec:
    """Low-rank adapters; merged into the weights on export."""

    enabled: bool = opt(False, "train LoRA adapters instead of all weights")
    rank: int = opt(8, "adapter rank", ge=1)
    alpha: float = opt(16.0, "scaling numerator", gt=0)
    dropout: float = opt(0.0, "adapter dropout", ge=0, lt=1)
    target_modules: list[str] = opt([], "module names to adapt; empty: the model family's attention projections "
                                     "(q/k/v/o_proj; Phi-3: qkv_proj, o_proj; DeepSeek-V3: its latent projections)")


@dataclass(kw_only=True)
class _TrainingStage(StageSpec):
    data: list[SourceSpec] = opt([], "training data, prepared by the stage itself (or give `dataset`)")
    dataset: str | None = opt(None, "a `data` run whose packed dataset (dataset/, val/) is used as is")
    optim: OptimSpec = opt(default_factory=OptimSpec, help="optimiser and schedule")
    train: TrainSpec = opt(default_factory=TrainSpec, help="step loop")
    resources: ResourcesSpec = opt(default_factory=ResourcesSpec, help="workers")

    def check(self):
        yield from super().check()
        if not self.data and not self.dataset:
            yield "data", "needs at least one source, or a prepared `dataset` run", ""
        if self.data and self.dataset:
            yield "dataset", "give either data sources or a prepared dataset run, not both", ""


@dataclass(kw_only=True)
class PretrainStage(_TrainingStage):
    """Pre-train a model from scratch (or continue from a run) on a corpus."""

    KIND: ClassVar[str] = "pretrain"
    INPUTS: ClassVar[tuple[str, ...]] = ("tokenizer", "init_from", "dataset")
    tokenizer: str = opt(help="tokenizer run name")
    model: ModelSpec = opt(default_factory=ModelSpec, help="architecture")
    init_from: str | None = opt(None, "start from this run's weights (continued pre-training)")
    new_tokens: list[str] = opt([], "domain tokens added to the vocabulary when continuing (needs init_from and raw "
                                    "data); each new embedding row starts at the mean of its old pieces' rows")

    def check(self):
        yield from super().check()
        if self.new_tokens and not self.init_from:
            yield "new_tokens", "extends an existing model's vocabulary: needs init_from", \
                "for a new model, train a tokenizer on a corpus that has these words"
        if self.new_tokens and self.dataset:
            yield "new_tokens", "a prepared dataset was tokenized without these tokens", \
                "give raw `data` sources: the stage tokenizes them with the extended tokenizer"


@dataclass(kw_only=True)
class SftStage(_TrainingStage):
    """Supervised fine-tuning on chat data, loss on assistant tokens only."""

    KIND: ClassVar[str] = "sft"
    INPUTS: ClassVar[tuple[str, ...]] = ("base", "dataset")
    base: str = opt(help="run whose model is fine-tuned (pretrain or sft)")
    lora: LoraSpec = opt(default_factory=LoraSpec, help="LoRA")
    packing: bool = opt(True, "pack several conversations per sequence")


@dataclass(kw_only=True)
class DpoStage(_TrainingStage):
    """Direct preference optimisation against a frozen reference."""

    KIND: ClassVar[str] = "dpo"
    INPUTS: ClassVar[tuple[str, ...]] = ("base", "dataset")
    base: str = opt(help="run whose model is the policy and the reference")
    loss: Literal["sigmoid", "ipo", "cdpo"] = opt("sigmoid", "DPO loss variant")
    beta: float = opt(0.1, "strength of the implicit KL constraint", gt=0)
    label_smoothing: float = opt(0.0, "cdpo: assumed label-noise rate", ge=0, lt=0.5)
    sft_coef: float = opt(0.0, "weight of an SFT term on chosen responses", ge=0)


@dataclass(kw_only=True)
class RewardModelStage(_TrainingStage):
    """Bradley–Terry reward model with a scalar head on a pre-trained backbone."""

    KIND: ClassVar[str] = "reward_model"
    INPUTS: ClassVar[tuple[str, ...]] = ("base", "dataset")
    base: str = opt(help="backbone run")


# ---------------------------------------------------------------------------- sweep


@dataclass(kw_only=True)
class ParamSpace:
    """The distribution of one hyper-parameter."""

    type: Literal["choice", "grid", "uniform", "loguniform", "randint"] = opt(help="distribution")
    values: list[Any] = opt([], "choice/grid values")
    low: float | None = opt(None, "lower bound")
    high: float | None = opt(None, "upper bound")

    def check(self):
        if self.type in ("choice", "grid") and not self.values:
            yield "values", f"{self.type} needs values", ""
        if self.type in ("uniform", "loguniform", "randint"):
            if self.low is None or self.high is None:
                yield "low", f"{self.type} needs low and high", ""
            elif self.low >= self.high:
                yield "low", f"low={self.low} must be < high={self.high}", ""
            elif self.type == "loguniform" and self.low <= 0:
                yield "low", "loguniform needs low > 0", ""


@dataclass(kw_only=True)
class SweepStage(StageSpec):
    """Search hyper-parameters of a training spec with Ray Tune."""

    KIND: ClassVar[str] = "sweep"
    base: dict[str, Any] = opt(help="a training spec (any kind) whose keys are searched")
    space: dict[str, ParamSpace] = opt(help="dotted key of the base spec → distribution")
    metric: str = opt("val_loss", "metric to optimise")
    mode: Literal["min", "max"] = opt("min", "minimise or maximise")
    num_samples: int = opt(4, "trials", ge=1)
    max_concurrent: int = opt(1, "trials at once", ge=1)
    scheduler: Literal["fifo", "asha", "pbt"] = opt("fifo", "trial scheduler (asha stops poor trials early)")
    search: Literal["random", "grid", "optuna"] = opt("random", "search algorithm (optuna: TPE, needs optuna)")
    grace_period: int = opt(10, "ASHA: steps every trial runs before it may be stopped", ge=1)
    reduction_factor: int = opt(2, "ASHA: 1/reduction_factor of the trials go on at each rung", ge=2)

    def check(self):
        yield from super().check()
        from forge_ray.spec.load import build_spec  # late: load imports this module
        from forge_ray.spec.typed import SpecError

        try:
            base = build_spec(self.base)
        except SpecError as exc:
            for p in exc.problems:
                yield f"base.{p.path}" if p.path else "base", p.message, p.hint
            return
        if base.kind not in ("pretrain", "sft", "dpo", "reward_model"):
            yield "base.kind", f"sweeps run training specs (pretrain, sft, dpo, reward_model), not {base.kind!r}", ""
        if self.scheduler == "pbt":
            yield "scheduler", "pbt is not supported yet (trials would need to swap checkpoints)", "use asha or fifo"
        if self.scheduler == "asha" and self.grace_period >= base.train.max_steps:
            yield "grace_period", f"must be below base.train.max_steps ({base.train.max_steps}) for ASHA to stop " \
                                  "anything", ""
        for key in self.space:
            try:
                set_probe = copy.deepcopy(self.base)
                dist = self.space[key]
                probe = dist.values[0] if dist.values else int(dist.low) if dist.type == "randint" else dist.low
                _set(set_probe, key, probe)
                build_spec(set_probe)
            except SpecError as exc:
                yield f"space.{key}", "; ".join(p.message for p in exc.problems), "a dotted key of the base spec"


def _set(spec: dict, key: str, value) -> None:
    node = spec
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# ---------------------------------------------------------------------------- pipeline


class AnyStage:
    """Marker type: a nested spec of any kind, chosen by its ``kind`` key."""

    __forge_polymorphic__ = True


@dataclass(kw_only=True)
class PipelineStage(StageSpec):
    """Stages run in order; a stage names an earlier one's run as its input."""

    KIND: ClassVar[str] = "pipeline"
    stages: list[AnyStage] = opt(help="the stages, in order")
    stop_on_failure: bool = opt(True, "stop at the first failed stage")

    def check(self):
        yield from super().check()
        if not self.stages:
            yield "stages", "needs at least one stage", ""
        seen: set[str] = set()
        for i, stage in enumerate(self.stages or []):
            if not isinstance(stage, StageSpec):
                continue
            if isinstance(stage, PipelineStage):
                yield f"stages[{i}].kind", "a pipeline cannot contain a pipeline", ""
            if stage.name in seen:
                yield f"stages[{i}].name", f"run name {stage.name!r} is used twice", "give each stage its own name"
            later = {s.name for s in self.stages[i + 1:] if isinstance(s, StageSpec)}
            for field_name, run in stage.input_runs().items():
                if run in later and run not in seen:
                    yield f"stages[{i}].{field_name}", f"names {run!r}, which runs later in the pipeline", \
                        "move that stage earlier"
            seen.add(stage.name)


STAGES: dict[str, type[StageSpec]] = {
    cls.KIND: cls
    for cls in (TokenizerStage, DataStage, AugmentStage, PretrainStage, SftStage, DpoStage, RewardModelStage, RLStage,
                EvalStage, VLMStage, SweepStage, PipelineStage)
}
