"""The spec of the evaluation stage (``eval``); the RL stage's is in :mod:`forge_ray.spec.rl`.
Re-exported by :mod:`forge_ray.spec.stages` with every other kind."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from forge_ray.spec.base import StageSpec
from forge_ray.spec.sections import SourceSpec
from forge_ray.spec.typed import opt

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
