"""The ``augment`` stage on Ray Data: documents and records tables in, an augmented corpus out.

Documents stream through the same readers as the ``data`` stage (every bad row located by file
and line); each is expanded by :func:`~forge_ray.knowledge.augment.augment_document` in a Ray
Data map; records are validated on the driver (a missing column names the file and row before
anything runs) and rendered in a map too. Generated rows that repeat another row's text are
dropped (the originals' ``multiplicity`` copies are kept: they are deliberate), then rows
leaking an eval answer (the data stage's decontamination). Nothing is written until every step
has succeeded, so a failed stage leaves no partial corpus.

Writes ``corpus/*.parquet`` (``text``, ``doc_id``, ``source_doc``, ``strategy``, ``span_start``,
``span_end``) and ``report/report.{json,md}`` with per-strategy counts and examples.

Run: ``forge run jobs/configs/demo.yaml`` (the demo's ``demo-augmented`` stage) — on a laptop
(local Ray), one GPU machine or a cluster alike (``RAY_ADDRESS=… forge run …``): the stage uses
CPUs only.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from forge_ray.data import pipeline as P
from forge_ray.data.sources import DataError, _matches, expand_source, fingerprint, source_dataset
from forge_ray.knowledge.augment import ModelFreeStrategies, augment_document, augment_record
from forge_ray.runner import Context, StageResult
from forge_ray.runs import RunDir
from forge_ray.spec.augment import AugmentStage
from forge_ray.spec.stages import CleanSpec

log = logging.getLogger("forge_ray.knowledge")
CORPUS_COLUMNS = ["doc_id", "text", "source_doc", "strategy", "span_start", "span_end"]
#: strategies whose rows are deduplicated against every other row (the originals' copies are deliberate)
GENERATED = ("permute", "render", "teacher_qa", "teacher_paraphrase", "teacher_relations")
REJECTIONS = ("unparseable", "ungrounded")


def strategies(spec: AugmentStage) -> ModelFreeStrategies:
    return ModelFreeStrategies(multiplicity=spec.multiplicity, permute=spec.permute.copies,
                               render=spec.render.copies, templates=tuple(spec.render.templates),
                               aliases={k: tuple(v) for k, v in spec.aliases.items()}, restate=spec.permute.restate,
                               split=spec.permute.split)


class AugmentDocuments:
    """Ray Data batch function: document rows → their augmented rows (provenance attached)."""

    def __init__(self, how: ModelFreeStrategies, seed: int, exclude: list[str]):
        self.how, self.seed, self.exclude = how, seed, exclude

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {c: [] for c in CORPUS_COLUMNS}
        for text, meta in zip(batch["text"], batch["meta"]):
            path = json.loads(meta)["path"]
            if _matches(path, self.exclude):  # a source's own include/exclude glob rules
                rows = [{"text": text, "doc_id": f"{path}#original-0", "source_doc": path, "strategy": "kept",
                         "span": [0, len(text)]}]
            else:
                rows = augment_document(path, text, self.how, self.seed)
            for r in rows:
                _append(out, r)
        return out


class RenderRecords:
    """Ray Data batch function: records (as JSON) → their rendered phrasings."""

    def __init__(self, how: ModelFreeStrategies, seed: int):
        self.how, self.seed = how, seed

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = {c: [] for c in CORPUS_COLUMNS}
        for item in batch["item"]:
            rec = json.loads(item)
            how = self.how if not rec["templates"] else _with_field_templates(self.how, rec["templates"])
            for r in augment_record(rec["source"], rec["row"], rec["record"], rec["entity"], how, self.seed):
                _append(out, r)
        return out


def _with_field_templates(how: ModelFreeStrategies, templates: dict) -> ModelFreeStrategies:
    from dataclasses import replace

    return replace(how, field_templates={k: tuple(v) for k, v in templates.items()})


def _append(out: dict, r: dict) -> None:
    out["doc_id"].append(r["doc_id"])
    out["text"].append(r["text"])
    out["source_doc"].append(r["source_doc"])
    out["strategy"].append(r["strategy"])
    out["span_start"].append(int(r["span"][0]))
    out["span_end"].append(int(r["span"][1]))


def _record_items(spec: AugmentStage) -> list[dict]:
    """Every record of every table, validated (file and row named on a problem)."""
    from forge_ray.knowledge.records import read_records

    items = []
    for table in spec.records:
        rows = read_records(table.path, table.entity)
        unknown = sorted(set(table.templates) - set().union(*(r.keys() for r in rows)))
        if unknown:
            raise DataError(table.path, 1, f"templates name columns the table does not have: {', '.join(unknown)}")
        name = table.path.rsplit("/", 1)[-1]
        items += [{"item": json.dumps({"source": name, "row": i, "record": {k: _plain(v) for k, v in r.items()},
                                       "entity": table.entity, "templates": table.templates}, ensure_ascii=False)}
                  for i, r in enumerate(rows, start=1)]
    return items


def _plain(value):
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _documents(spec: AugmentStage):
    """The source documents (or None), with bad and empty ones failing the stage or counted."""
    if not spec.sources:
        return None, {"documents": 0, "skipped": 0}
    ds = source_dataset(spec.sources).materialize()
    bad = sorted(ds.filter(lambda r: r["error"] != "" or not r["text"].strip()).take_all(),
                 key=lambda r: (r["file"], r["line"]))
    if bad and spec.on_error == "fail":
        first = bad[0]
        if first["error"]:
            from forge_ray.data.sources import row_error

            raise row_error(first)
        raise DataError(first["file"], first["line"] if first["line"] >= 0 else None, "empty document",
                        "remove it, or set on_error: skip")
    good = ds.filter(lambda r: r["error"] == "" and bool(r["text"].strip()))
    return good, {"documents": ds.count() - len(bad), "skipped": len(bad)}


def run(spec: AugmentStage, run: RunDir, ctx: Context) -> StageResult:
    files = [sf for i, s in enumerate(spec.sources) for sf in expand_source(s, i)]
    items = _record_items(spec)  # validated before Ray starts: a bad table fails at once
    if spec.teacher:
        from forge_ray.knowledge.teacher_run import check_endpoint

        check_endpoint(spec.teacher)  # a teacher endpoint that is down or refuses us: fail now, naming it
    run.update(fingerprints={"sources": fingerprint(files) if files else ""}, input_files=len(files),
               input_records=len(items))
    ctx.ensure_ray()
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # same seed, same corpus
    how = strategies(spec)
    docs, doc_counts = _documents(spec)
    parts = []
    if docs is not None:
        parts.append(docs.map_batches(AugmentDocuments(how, spec.seed, spec.exclude), batch_format="numpy",
                                      batch_size=64))
    if items:
        parts.append(ray.data.from_items(items).map_batches(RenderRecords(how, spec.seed), batch_format="numpy",
                                                            batch_size=256))
    teacher_reasons: dict[str, Counter] = {}
    if spec.teacher and docs is not None:
        kept_teacher, teacher_reasons = _teacher(spec, docs, ctx)
        if kept_teacher is not None:
            parts.append(kept_teacher)
    ds = (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])).materialize()
    produced = Counter(r["strategy"] for r in ds.select_columns(["strategy"]).iter_rows())
    for strategy, reasons in teacher_reasons.items():  # a teacher's rejected outputs were produced too
        produced[strategy] += sum(n for reason, n in reasons.items() if reason != "kept")
    ds, duplicates = _drop_generated_duplicates(ds)
    before_decontam = Counter(r["strategy"] for r in ds.select_columns(["strategy"]).iter_rows())
    clean = CleanSpec(decontaminate=list(spec.decontaminate), decontam_ngram=spec.decontam_ngram)
    ds, decontam = P.decontaminate(ds, clean)
    kept = Counter()
    words = Counter()
    examples: dict[str, list[dict]] = {}
    for r in ds.select_columns(["strategy", "text", "source_doc"]).iter_rows():
        kept[r["strategy"]] += 1
        words[r["strategy"]] += len(r["text"].split())
        if len(examples.setdefault(r["strategy"], [])) < 2:
            examples[r["strategy"]].append({"source_doc": r["source_doc"], "text": r["text"][:400]})
    if not sum(kept.values()):
        raise DataError(spec.sources[0].path if spec.sources else spec.records[0].path, None,
                        "the augmented corpus is empty", "check the sources and the strategies' counts")
    with run.local_dir("corpus") as out:
        ds.select_columns(CORPUS_COLUMNS).write_parquet(str(out), min_rows_per_file=spec.shard_rows)
    rows = {s: {"produced": produced[s], **{r: teacher_reasons.get(s, {}).get(r, 0) for r in REJECTIONS},
                "duplicates": duplicates.get(s, 0), "contaminated": before_decontam[s] - kept[s], "kept": kept[s],
                "words": words[s]} for s in sorted(produced)}
    for s, v in rows.items():
        if s in teacher_reasons:
            parsed = v["produced"] - v["unparseable"]
            v["grounded_fraction"] = (parsed - v["ungrounded"]) / parsed if parsed else 0.0
    metrics = {"documents": doc_counts["documents"], "skipped_documents": doc_counts["skipped"],
               "records": len(items), "rows": sum(kept.values()), "words": sum(words.values()),
               **{f"{s}_rows": v["kept"] for s, v in rows.items()},
               "duplicates_removed": sum(duplicates.values()), "contaminated_removed": decontam.docs_in - decontam.docs_out}
    with run.local_dir("report") as rdir:
        _report(rdir, spec, metrics, rows, examples)
    run.log_metrics(0, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    log.info("augment: %s", json.dumps(metrics))
    return StageResult(metrics=metrics, outputs={"corpus": "corpus", "report": "report"})


def _teacher(spec: AugmentStage, docs, ctx: Context):
    """The teacher's kept rows and its rejections by reason (an endpoint is checked first)."""
    from forge_ray.eval.endpoint import is_endpoint
    from forge_ray.knowledge.teacher_run import teacher_rows
    from forge_ray.runner import input_dir

    included = docs.filter(_Included(spec.exclude))
    if is_endpoint(spec.teacher.model):
        kept, reasons, _ = teacher_rows(spec.teacher, included, None, spec.seed)
        return kept, reasons
    with input_dir(ctx, spec.teacher.model, "model") as model_dir:
        kept, reasons, _ = teacher_rows(spec.teacher, included, str(model_dir), spec.seed)
        return (kept.materialize() if kept is not None else None), reasons


class _Included:
    """Row filter: documents the spec does not exclude from augmentation."""

    def __init__(self, exclude: list[str]):
        self.exclude = exclude

    def __call__(self, row: dict) -> bool:
        return not _matches(json.loads(row["meta"])["path"], self.exclude)


def _drop_generated_duplicates(ds):
    """Generated rows (permuted, rendered) whose normalised text equals an earlier row's are
    dropped and counted per strategy; the originals' deliberate copies are kept."""
    import ray

    from forge_ray.data.clean import content_hash

    seen: set[str] = set()
    drop: set[str] = set()
    counts: Counter = Counter()
    for r in ds.select_columns(["doc_id", "text", "strategy"]).iter_rows():
        key = content_hash(" ".join(r["text"].split()))
        if r["strategy"] in GENERATED and key in seen:
            drop.add(r["doc_id"])
            counts[r["strategy"]] += 1
        seen.add(key)
    if not drop:
        return ds, counts
    ref = ray.put(drop)
    return ds.filter(P._NotIn(ref)).materialize(), counts


def _report(rdir, spec: AugmentStage, metrics: dict, rows: dict, examples: dict) -> None:
    (rdir / "report.json").write_text(json.dumps({"metrics": metrics, "strategies": rows, "examples": examples},
                                                 indent=2, ensure_ascii=False))
    lines = [f"# Augment report: {spec.name}", "",
             f"{metrics['documents']} documents and {metrics['records']} records → {metrics['rows']} rows "
             f"({metrics['words']} words).", "",
             "| strategy | produced | unparseable | ungrounded | grounded | duplicates | contaminated | kept | words |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s} | {v['produced']} | {v['unparseable']} | {v['ungrounded']} | "
              f"{'—' if 'grounded_fraction' not in v else format(v['grounded_fraction'], '.2f')} | {v['duplicates']} | "
              f"{v['contaminated']} | {v['kept']} | {v['words']} |" for s, v in rows.items()]
    lines += ["", "## Examples", ""]
    for s, items in examples.items():
        for e in items:
            lines += [f"**{s}** (from `{e['source_doc']}`):", "", "> " + e["text"].replace("\n", "\n> "), ""]
    (rdir / "report.md").write_text("\n".join(lines))
