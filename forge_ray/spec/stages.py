"""One dataclass per stage kind. A spec file is one of these with ``kind`` and ``name``.

Inputs from earlier stages are named by **run name** (``tokenizer: demo-tokenizer``): the
run directory of that name under the storage root holds what the stage needs, and the
reference becomes a parent in the new run's lineage. In a ``pipeline`` the stage names are
run names too, so a later stage simply names an earlier one.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from forge_ray.spec.sections import ModelSpec, OptimSpec, ResourcesSpec, SourceSpec, TrainSpec
from forge_ray.spec.typed import opt

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(kw_only=True)
class StageSpec:
    """Fields every stage has."""

    kind: str = opt(help="stage kind")
    name: str = opt(help="run name: the run directory under the storage root; letters, digits, '-', '_', '.'")
    description: str = opt("", "free text shown in run tables")
    seed: int = opt(0, "seed for every random choice in the stage", ge=0)

    KIND: ClassVar[str] = ""
    #: fields whose value names another run (an input); validated and recorded as parents
    INPUTS: ClassVar[tuple[str, ...]] = ()

    def check(self):
        if self.kind != self.KIND:
            yield "kind", f"must be {self.KIND!r} for this spec class, got {self.kind!r}", ""
        if not _NAME.match(self.name or ""):
            yield "name", f"{self.name!r} is not a valid run name", "use letters, digits, '-', '_' or '.', ≤100 chars"

    def input_runs(self) -> dict[str, str]:
        """Input field → run name, for the inputs that are set."""
        return {f: getattr(self, f) for f in self.INPUTS if getattr(self, f)}


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
    target_modules: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"], "module names to adapt")


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


# ---------------------------------------------------------------------------- RL


@dataclass(kw_only=True)
class RolloutSpec:
    """How responses are sampled."""

    backend: Literal["auto", "vllm", "hf"] = opt("auto", "auto: vLLM when installed, else HF generate")
    num_engines: int = opt(1, "rollout engines (actors)", ge=1)
    tensor_parallel: int = opt(1, "GPUs one engine spans (vLLM tensor parallelism; needs gpus_per_engine: 1)", ge=1)
    n_samples: int = opt(4, "responses per prompt", ge=1)
    temperature: float = opt(1.0, "sampling temperature", ge=0)
    top_p: float = opt(1.0, "nucleus sampling", gt=0, le=1)
    max_new_tokens: int = opt(32, "longest response", ge=1)
    stop: list[str] = opt([], "stop strings")
    cpus_per_engine: float = opt(1.0, "CPUs per engine actor (fractions allowed)", gt=0)
    gpus_per_engine: float = opt(0.0, "GPUs per engine actor (per tensor-parallel rank)", ge=0)


@dataclass(kw_only=True)
class ColocateSpec:
    """Roles that share resources instead of each taking their own (OpenRLHF's colocation).
    Colocated actors split their bundle's CPUs/GPUs equally."""

    policy_reference: bool = opt(False, "the reference runs on the policy's rank-0 bundle")
    critic_reward: bool = opt(False, "the reward model runs on the critic's rank-0 bundle (PPO)")
    all: bool = opt(False, "every role, rollout engines included, on the policy's bundles "
                           "(on GPUs vLLM sleeps while the policy trains)")


@dataclass(kw_only=True)
class RLStage(StageSpec):
    """Reinforcement learning of a policy with PPO, GRPO or REINFORCE++."""

    KIND: ClassVar[str] = "rl"
    INPUTS: ClassVar[tuple[str, ...]] = ("policy", "reward_model")
    policy: str = opt(help="run whose model is the initial policy (and reference)")
    algo: Literal["ppo", "grpo", "rloo", "reinforce++"] = opt("grpo", "algorithm")
    prompts: list[SourceSpec] = opt(help="prompts (format prompt_answer)")
    eval_fraction: float = opt(0.2, "share of prompts held out to measure reward", ge=0, lt=1)
    reward_model: str | None = opt(None, "reward-model run")
    reward_funcs: list[str] = opt(["normalized_match"], "reward functions: built-in names or module:function")
    reward_weights: list[float] = opt([], "weight per reward (default 1 each; the reward model is last)")
    rollout: RolloutSpec = opt(default_factory=RolloutSpec, help="sampling")
    kl_coef: float = opt(0.01, "KL penalty to the reference (in the reward or as a loss term, by algo)", ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k3", "KL estimator for the loss term")
    entropy_coef: float = opt(0.0, "entropy bonus", ge=0)
    clip_eps: float = opt(0.2, "policy-ratio clip", gt=0)
    clip_eps_high: float | None = opt(None, "upper ratio clip (default: clip_eps)", gt=0)
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = opt(
        "token-mean", "how token losses are averaged")
    gamma: float = opt(1.0, "discount", gt=0, le=1)
    lam: float = opt(0.95, "GAE lambda (PPO)", ge=0, le=1)
    epochs: int = opt(1, "policy passes over each rollout batch", ge=1)
    micro_batch_size: int = opt(8, "sequences per policy forward", ge=1)
    prompts_per_step: int = opt(8, "prompts per RL step", ge=1)
    max_steps: int = opt(20, "RL steps", ge=1)
    eval_every: int = opt(5, "steps between held-out reward measurements (0: only at start and end)", ge=0)
    checkpoint_every: int = opt(5, "steps between checkpoints (0: only at the end)", ge=0)
    optim: OptimSpec = opt(default_factory=lambda: OptimSpec(lr=1e-5, warmup_steps=0), help="policy optimiser")
    resources: ResourcesSpec = opt(default_factory=ResourcesSpec, help="policy (and critic) workers")
    reference_cpus: float = opt(0.5, "CPUs of the reference actor (it only scores)", gt=0)
    colocate: ColocateSpec = opt(default_factory=ColocateSpec, help="roles that share resources")
    weight_sync: Literal["auto", "blob", "nccl"] = opt(
        "auto", "how new weights reach the engines: nccl (GPU broadcast from policy rank 0), blob "
                "(safetensors through Ray); auto: nccl when policy and engines have their own GPUs")

    def check(self):
        yield from super().check()
        if not self.prompts:
            yield "prompts", "needs at least one source", ""
        n_rewards = len(self.reward_funcs) + (1 if self.reward_model else 0)
        if n_rewards == 0:
            yield "reward_funcs", "needs a reward: a function or a reward_model", ""
        if self.reward_weights and len(self.reward_weights) != n_rewards:
            yield "reward_weights", f"has {len(self.reward_weights)} weights for {n_rewards} rewards", ""
        if self.algo in ("grpo", "rloo") and self.rollout.n_samples < 2:
            yield "rollout.n_samples", f"{self.algo} compares samples of the same prompt: needs at least 2", ""
        r, gpus = self.rollout, self.resources.gpus_per_worker > 0
        if r.tensor_parallel > 1 and r.gpus_per_engine != 1:
            yield "rollout.tensor_parallel", "tensor parallelism spans whole GPUs: set rollout.gpus_per_engine: 1", ""
        if r.tensor_parallel > 1 and r.backend == "hf":
            yield "rollout.tensor_parallel", "the HF fallback engine has no tensor parallelism", "use backend: vllm"
        if r.tensor_parallel > 1 and self.colocate.all:
            yield "colocate.all", "colocated engines run on the policy's bundles: use rollout.tensor_parallel: 1", ""
        if self.colocate.critic_reward and (self.algo != "ppo" or not self.reward_model):
            yield "colocate.critic_reward", "needs a critic (algo: ppo) and a reward_model", ""
        if self.weight_sync == "nccl" and not (gpus and r.gpus_per_engine > 0):
            yield "weight_sync", "nccl needs GPUs for the policy and the engines (resources.gpus_per_worker, " \
                                 "rollout.gpus_per_engine)", ""
        if self.weight_sync == "nccl" and self.colocate.all:
            yield "weight_sync", "NCCL cannot join two ranks on one GPU: colocate.all syncs by blob", ""

    def sync_method(self) -> str:
        """The weight-sync path actually used (``weight_sync`` with ``auto`` resolved)."""
        if self.weight_sync != "auto":
            return self.weight_sync
        own_gpus = self.resources.gpus_per_worker > 0 and self.rollout.gpus_per_engine > 0 and not self.colocate.all
        return "nccl" if own_gpus else "blob"


# ---------------------------------------------------------------------------- eval


@dataclass(kw_only=True)
class TaskSpec:
    """A task suite from a JSONL file with a scorer."""

    name: str = opt(help="task name in the report")
    path: str = opt(help="JSONL with 'prompt' and 'answer' (or 'choices' and the right one)")
    scorer: str = opt("normalized_match", "exact_match, normalized_match, contains, contains_answer, regex, "
                                          "numeric, choice_loglik, any reward function or module:function")
    scorer_args: dict[str, Any] = opt({}, "keyword arguments for the scorer (e.g. pattern, rel_tol)")
    style: Literal["auto", "chat", "plain"] = opt("auto", "ask through the chat template, or as 'Q: …\\nA:' text "
                                                         "(auto: chat when the model has a template)")
    few_shot: int = opt(0, "the file's first N rows become worked examples (not scored)", ge=0)
    max_new_tokens: int = opt(32, "generation length", ge=1)
    limit: int | None = opt(None, "use only the first N items", ge=1)


JUDGES = ("reference", "reward_model", "rubric", "human")


@dataclass(kw_only=True)
class EvalStage(StageSpec):
    """Evaluate one or more models and compare them side by side."""

    KIND: ClassVar[str] = "eval"
    models: list[str] = opt(help="run names, HF model directories, random:RUN (RUN's architecture, untrained), "
                                 "or OpenAI-compatible endpoints http://host:port/v1#model (key: $FORGE_ENDPOINT_API_KEY)")
    tasks: list[TaskSpec] = opt([], "task suites")
    perplexity: list[SourceSpec] = opt([], "text for perplexity and bits-per-byte")
    perplexity_dataset: str | None = opt(None, "a data run whose held-out (val) documents are scored for "
                                               "perplexity and bits-per-byte")
    harness_tasks: list[str] = opt([], "EleutherAI lm-eval task names, run on each model (offline)")
    harness_include: list[str] = opt([], "directories of lm-eval task YAMLs with local data files")
    harness_fewshot: int | None = opt(None, "lm-eval num_fewshot (default: each task's own)", ge=0)
    harness_limit: int | None = opt(None, "lm-eval: only the first N items per task", ge=1)
    judges: list[Literal["reference", "reward_model", "rubric", "human"]] = opt(
        ["reference"], "pairwise judges: reference scores, a reward model, a rubric judge model, arena votes")
    reward_model: str | None = opt(None, "reward-model run for the reward_model judge")
    rubric_model: str | None = opt(None, "model run (or directory) that judges with the rubric")
    rubric: str = opt("Which answer is correct, helpful and concise?", "the rubric judge's instruction")
    backend: Literal["auto", "vllm", "hf"] = opt("auto", "generation: vLLM when installed, else batched HF")
    batch_size: int = opt(16, "prompts per HF batch", ge=1)
    bootstrap_samples: int = opt(1000, "resamples for confidence intervals", ge=100)
    cpus_per_model: float = opt(1.0, "CPUs of each model's evaluation task (models run in parallel)", gt=0)
    gpus_per_model: float = opt(0.0, "GPUs of each model's evaluation task", ge=0)

    def check(self):
        yield from super().check()
        if not self.models:
            yield "models", "needs at least one model", ""
        if len(set(self.models)) != len(self.models):
            yield "models", "names a model twice", ""
        if not (self.tasks or self.harness_tasks or self.perplexity or self.perplexity_dataset):
            yield "tasks", "nothing to evaluate: give tasks, harness_tasks, perplexity or perplexity_dataset", ""
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            yield "tasks", "two tasks share a name", "give each task its own name"
        if any(m.startswith(("http://", "https://")) for m in self.models):
            if self.harness_tasks or any(t.scorer == "choice_loglik" for t in self.tasks):
                yield "models", "endpoint models answer generative tasks only (no choice_loglik, no harness_tasks)", ""
            for m in self.models:
                if m.startswith(("http://", "https://")) and "#" not in m:
                    yield "models", f"endpoint {m!r}: name the model after '#' (…/v1#model)", ""
        if "reward_model" in self.judges and not self.reward_model:
            yield "reward_model", "the reward_model judge needs a reward_model run", ""
        if "rubric" in self.judges and not self.rubric_model:
            yield "rubric_model", "the rubric judge needs a rubric_model", ""

    def input_runs(self) -> dict[str, str]:
        runs = {f"models[{i}]": m.removeprefix("random:") for i, m in enumerate(self.models)
                if not m.startswith(("http://", "https://"))}
        for field_name in ("reward_model", "rubric_model", "perplexity_dataset"):
            if getattr(self, field_name):
                runs[field_name] = getattr(self, field_name)
        return runs


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
        if self.scheduler == "asha" and self.grace_period >= getattr(base, "train").max_steps:
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
    for cls in (TokenizerStage, DataStage, PretrainStage, SftStage, DpoStage, RewardModelStage, RLStage,
                EvalStage, SweepStage, PipelineStage)
}
