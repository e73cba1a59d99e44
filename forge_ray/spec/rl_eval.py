"""The specs of the stages after training: reinforcement learning (``rl``) and evaluation
(``eval``). Re-exported by :mod:`forge_ray.spec.stages` with every other kind."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from forge_ray.spec.base import StageSpec
from forge_ray.spec.sections import OptimSpec, ResourcesSpec, SourceSpec
from forge_ray.spec.typed import opt

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
    eval_samples: int = opt(4, "held-out reward is also measured on this many samples per prompt at the rollout "
                               "temperature (the policy RL optimises; fixed seeds); 0: greedy only", ge=0)
    checkpoint_every: int = opt(5, "steps between checkpoints (0: only at the end)", ge=0)
    optim: OptimSpec = opt(default_factory=lambda: OptimSpec(lr=1e-5, warmup_steps=0), help="policy optimiser")
    resources: ResourcesSpec = opt(default_factory=ResourcesSpec, help="policy (and critic) workers")
    reference_cpus: float = opt(0.5, "CPUs of the reference actor (it only scores)", gt=0)
    colocate: ColocateSpec = opt(default_factory=ColocateSpec, help="roles that share resources")
    engine: Literal["forge", "openrlhf"] = opt("forge", "forge's own actors, or OpenRLHF's train_ppo_ray as a "
                                                         "Ray job on a GPU cluster (needs openrlhf installed there)")
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


@dataclass(kw_only=True)
class RetrievalSpec:
    """The retrieval baseline: documents chunked and indexed with BM25, the top-k passages put in
    front of each question for the models evaluated with ``rag``."""

    documents: list[SourceSpec] = opt(help="what to index: document paths, or `run:` a data/augment run")
    k: int = opt(3, "passages per question", ge=1, le=50)
    chunk_chars: int = opt(400, "longest chunk in characters (chunks follow paragraphs)", ge=50)
    max_context_chars: int = opt(1000, "passages are cut to this many characters in the prompt (the model's "
                                       "context is finite)", ge=50)
    gold_field: str = opt("source_docs", "task rows' field listing the documents that hold the answer, for "
                                         "recall@k (paths match by their trailing components)")

    def check(self):
        if not self.documents:
            yield "documents", "needs at least one source to index", ""


Mode = Literal["closed_book", "rag", "both"]


@dataclass(kw_only=True)
class EvalStage(StageSpec):
    """Evaluate one or more models and compare them side by side."""

    KIND: ClassVar[str] = "eval"
    models: list[str] = opt(help="run names, HF model directories, random:RUN (RUN's architecture, untrained), "
                                 "or OpenAI-compatible endpoints http://host:port/v1#model (key: $FORGE_ENDPOINT_API_KEY, sent only to the URLs in $FORGE_ENDPOINT_URLS)")
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
    retrieval: RetrievalSpec | None = opt(None, "index documents for a retrieval (RAG) baseline")
    mode: Mode = opt("closed_book", "closed_book: questions alone; rag: with retrieved passages (`MODEL + rag` "
                                    "in the report); both: each model twice, on the same items")
    modes: dict[str, Mode] = opt({}, "model → its own mode (others use `mode`)")
    cpus_per_model: float = opt(1.0, "CPUs of each model's evaluation task (models run in parallel)", gt=0)
    gpus_per_model: float = opt(0.0, "GPUs of each model's evaluation task", ge=0)

    def check(self):
        from forge_ray.spec.sections import path_problems

        yield from super().check()
        for i, task in enumerate(self.tasks):
            for _, message, hint in path_problems("path", [task.path]):
                yield f"tasks[{i}].path", message, hint
        yield from path_problems("harness_include", self.harness_include)
        yield from path_problems("models", [m for m in self.models if os.path.isdir(m)])  # local model dirs
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
        for m in sorted(set(self.modes) - set(self.models)):
            yield f"modes.{m}", "names a model that is not in `models`", f"one of: {', '.join(self.models)}"
        if not self.retrieval and any(self.mode_of(m) != "closed_book" for m in self.models):
            yield "retrieval", "mode rag/both needs a `retrieval:` section (the documents to index)", ""

    def mode_of(self, model: str) -> str:
        return self.modes.get(model, self.mode)

    def input_runs(self) -> dict[str, str]:
        runs = {f"models[{i}]": m.removeprefix("random:") for i, m in enumerate(self.models)
                if not m.startswith(("http://", "https://"))}
        for field_name in ("reward_model", "rubric_model", "perplexity_dataset"):
            if getattr(self, field_name):
                runs[field_name] = getattr(self, field_name)
        from forge_ray.spec.base import source_runs

        return {**runs, **source_runs(self)}
