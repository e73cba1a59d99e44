"""The ``augment`` stage: documents and records tables in, an augmented corpus out.

Why a stage of its own: a model trained on documents that state each fact once memorises the
facts but cannot *extract* them for entities it was never asked about; several phrasings,
shuffled sentence orders, restated full names (Allen-Zhu & Li, arXiv 2309.14316) and
teacher-written study material (EntiGraph, arXiv 2409.07431) make them extractable. The output
is a corpus a ``data``, ``pretrain`` or ``sft`` stage reads with ``sources: [{run: NAME}]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from forge_ray.knowledge.model_free import FIELD_TEMPLATES
from forge_ray.spec.base import StageSpec
from forge_ray.spec.sections import SourceSpec, path_problems
from forge_ray.spec.typed import opt


@dataclass(kw_only=True)
class RecordsSpec:
    """A table of records (CSV, JSONL or Parquet): each row is a set of facts about one entity."""

    path: str = opt(help="the table: .csv, .jsonl or .parquet")
    entity: str = opt(help="the column naming what each row is about (e.g. product)")
    templates: dict[str, list[str]] = opt({}, "column → phrasings for that column ({entity}, {field}, {value}); "
                                              "other columns use `render.templates`")

    def check(self):
        if not self.path:
            yield "path", "must not be empty", "give the records file"
        if not self.entity:
            yield "entity", "must not be empty", "name the column that says what each row is about"
        yield from path_problems("path", [self.path] if self.path else [])
        for column, phrasings in self.templates.items():
            for j, t in enumerate(phrasings):
                if "{value}" not in t:
                    yield f"templates.{column}[{j}]", "a phrasing must contain {value}", "e.g. '{entity} weighs {value}.'"


@dataclass(kw_only=True)
class PermuteSpec:
    """Sentence-shuffled copies of each document (every sentence exactly once)."""

    copies: int = opt(3, "shuffled copies per document; 0 disables", ge=0, le=64)
    restate: bool = opt(True, "replace a leading pronoun or short name by the document's entity (its first heading)")
    split: bool = opt(False, "a compound sentence may come as simple statements, each led by the entity "
                             "(split at ';' and before participle phrases): a second phrasing of each fact")


@dataclass(kw_only=True)
class RenderSpec:
    """Each record as prose, in several phrasings, every field stated in each."""

    copies: int = opt(4, "phrasings per record; 0 disables", ge=0, le=64)
    templates: list[str] = opt(list(FIELD_TEMPLATES), "phrasings of one field: {entity}, {field}, {value}")

    def check(self):
        for j, t in enumerate(self.templates):
            if "{value}" not in t:
                yield f"templates[{j}]", "a phrasing must contain {value}", "e.g. 'The {field} of {entity} is {value}.'"
        if not self.templates:
            yield "templates", "needs at least one phrasing", ""


TeacherTask = Literal["qa", "paraphrase", "relations"]


@dataclass(kw_only=True)
class TeacherSpec:
    """Study material written by a teacher model per chunk of each document (EntiGraph, Active
    Reading): questions with answers, paraphrases, and how two entities of the chunk relate.
    Every item keeps its source document and character span; output that cannot be parsed, is
    not grounded in its chunk, repeats another item or leaks an eval answer is dropped and counted."""

    model: str = opt(help="a language-model run (generated on the cluster: vLLM where installed, else HF) or "
                          "an OpenAI-compatible endpoint http://host:port/v1#model (key: $FORGE_ENDPOINT_API_KEY, "
                          "sent only to the URLs in $FORGE_ENDPOINT_URLS)")
    tasks: list[TeacherTask] = opt(["qa", "paraphrase"], "what the teacher writes: qa, paraphrase, relations")
    prompts: dict[str, str] = opt({}, "task → prompt template replacing the built-in one ({chunk}, {entity}; "
                                      "relations also {a}, {b})")
    samples: int = opt(1, "generations per chunk and task", ge=1, le=16)
    chunk_chars: int = opt(600, "longest chunk shown to the teacher (chunks follow paragraphs)", ge=100)
    max_new_tokens: int = opt(160, "longest teacher answer", ge=8)
    temperature: float = opt(0.7, "sampling temperature (0: greedy)", ge=0)
    pairs_per_chunk: int = opt(2, "relations: entity pairs asked about per chunk", ge=1)
    max_documents: int | None = opt(None, "cap on documents the teacher reads (a quick, cheap first pass)", ge=1)
    concurrency: int = opt(1, "teacher actors (a run) or parallel requests (an endpoint)", ge=1)
    cpus_per_actor: float = opt(1.0, "CPUs of each teacher actor (a run)", gt=0)
    gpus_per_actor: float = opt(0.0, "GPUs of each teacher actor (a run)", ge=0)
    backend: Literal["auto", "vllm", "hf"] = opt("auto", "a run's generation: vLLM when installed, else HF")

    def check(self):
        if not self.model:
            yield "model", "must name a run or an endpoint", ""
        if self.model.startswith(("http://", "https://")) and "#" not in self.model:
            yield "model", f"endpoint {self.model!r}: name the model after '#' (…/v1#model)", ""
        for task in sorted(set(self.prompts) - {"qa", "paraphrase", "relations"}):
            yield f"prompts.{task}", "is not a teacher task", "one of: qa, paraphrase, relations"
        for task, template in self.prompts.items():
            if "{chunk}" not in template:
                yield f"prompts.{task}", "a prompt must contain {chunk} (the passage)", ""
        if not self.tasks:
            yield "tasks", "needs at least one task", "qa, paraphrase or relations"


@dataclass(kw_only=True)
class AugmentStage(StageSpec):
    """Turn documents and records into an augmented corpus whose facts a model can extract."""

    KIND: ClassVar[str] = "augment"
    sources: list[SourceSpec] = opt([], "documents (format text) to augment")
    records: list[RecordsSpec] = opt([], "records tables rendered as prose")
    multiplicity: int = opt(1, "copies of each original document kept in the corpus", ge=0, le=64)
    permute: PermuteSpec = opt(default_factory=PermuteSpec, help="sentence-shuffled, restated copies")
    render: RenderSpec = opt(default_factory=RenderSpec, help="records as prose")
    teacher: TeacherSpec | None = opt(None, "study material written by a teacher model")
    aliases: dict[str, list[str]] = opt({}, "entity → short names a document also uses for it (restated too)")
    exclude: list[str] = opt([], "glob patterns of source files kept as they are (copied once, never augmented), "
                                 "e.g. an FAQ whose order matters")
    decontaminate: list[str] = opt([], "eval files (jsonl) whose long n-grams must not appear in the output")
    decontam_ngram: int = opt(13, "n-gram length for decontamination", ge=4)
    shard_rows: int = opt(4096, "rows per Parquet shard of the corpus", ge=1)
    on_error: Literal["fail", "skip"] = opt("fail", "a bad document or record fails the stage, or is counted and skipped")

    def check(self):
        yield from super().check()
        if not self.sources and not self.records:
            yield "sources", "needs documents (sources) or records tables (records)", ""
        if self.multiplicity == 0 and not self.permute.copies and not (self.records and self.render.copies) \
                and not self.teacher:
            yield "multiplicity", "with no originals, no permuted copies and no rendered records the corpus is empty", ""
        yield from path_problems("decontaminate", self.decontaminate)
        if self.teacher and not self.sources:
            yield "teacher", "the teacher reads documents: give sources", ""

    def input_runs(self) -> dict[str, str]:
        runs = super().input_runs()
        if self.teacher and self.teacher.model and not self.teacher.model.startswith(("http://", "https://")):
            runs["teacher.model"] = self.teacher.model
        return runs
