"""The ``data`` stage: prepare a dataset and report what happened to every document.

Writes into the run directory:
``docs/*.parquet`` (the cleaned documents), ``dataset/*.parquet`` (packed rows, with a tokenizer),
``quarantine.jsonl`` (bad rows with file, line and reason, when ``on_error: skip``),
``report/report.json`` + ``report/report.md`` + ``report/lengths.png``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict

import numpy as np

from forge_ray.data import pipeline as P
from forge_ray.data.clean import is_heldout
from forge_ray.data.reuse import preparation_key, source_files
from forge_ray.data.sources import fingerprint, source_dataset
from forge_ray.runner import Context, StageResult, input_dir
from forge_ray.runs import RunDir
from forge_ray.spec.stages import DataStage

log = logging.getLogger("forge_ray.data")
DOC_COLUMNS = ["doc_id", "source", "file", "line", "text", "payload", "meta"]


def run(spec: DataStage, run: RunDir, ctx: Context) -> StageResult:
    files = source_files(spec)
    sources = fingerprint(files)
    with contextlib.ExitStack() as stack:  # the key of this preparation, for training runs that would repeat it
        tok_dir = stack.enter_context(input_dir(ctx, spec.tokenizer, "tokenizer")) if spec.tokenizer else None
        key = preparation_key(spec, files, str(tok_dir) if tok_dir else None, sources)
    run.update(fingerprints={"sources": sources, "prepared": key}, input_files=len(files))
    ctx.ensure_ray()
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # same seed, same rows
    steps: list[P.StepReport] = []
    quarantine_rel = "quarantine.jsonl"

    ds = source_dataset(spec.sources)
    ds, report, bad = P.split_errors(ds, spec, run.file(quarantine_rel))
    steps.append(report)
    if bad:
        run.write_text(quarantine_rel, "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bad))
        log.warning("data: %d bad rows quarantined in %s", len(bad), run.file(quarantine_rel))
    ds, report = P.scrub(ds, spec.clean.pii)
    steps.append(report)
    ds, report = P.length_filter(ds, spec.clean)
    steps.append(report)
    exempt = frozenset(i for i, s in enumerate(spec.sources) if s.dedup is False)
    if spec.clean.exact_dedup:
        ds, report, _ = P.exact_dedup(ds, exempt)
        steps.append(report)
    if spec.clean.near_dedup:
        ds, report, _ = P.near_dedup(ds, spec.clean, spec.seed, exempt)
        steps.append(report)
    ds, report = P.decontaminate(ds, spec.clean)
    steps.append(report)
    ds, report = P.mix(ds, spec)
    steps.append(report)
    for s in steps:
        log.info("data: %-14s %6d → %6d  %s", s.name, s.docs_in, s.docs_out, json.dumps(s.details))

    docs = ds.select_columns(DOC_COLUMNS)
    char_lengths = [len(t) for t in docs.select_columns(["text"]).to_pandas()["text"]]
    sources = _top_sources(docs)
    layout = P.layout_of(spec)
    pack: dict = {}
    with run.local_dir("docs") as out:  # the cleaned documents: inspectable, re-tokenisable
        docs.write_parquet(str(out), min_rows_per_file=spec.shard_rows)
    if spec.tokenizer:
        train_docs, val_docs = _split(docs, spec.val_fraction, spec.seed)
        with run.local_dir("dataset") as out:
            packed, pack = _tokenize_and_pack(train_docs, spec, layout, ctx)
            packed.write_parquet(str(out), min_rows_per_file=spec.shard_rows)
        if val_docs is not None:
            with run.local_dir("val") as out:
                packed_val, pack_val = _tokenize_and_pack(val_docs, spec, layout, ctx)
                packed_val.write_parquet(str(out), min_rows_per_file=spec.shard_rows)
            pack["val_rows"], pack["val_tokens"] = pack_val["rows"], pack_val["tokens"]
    with run.local_dir("report") as rdir:
        metrics = _report(rdir, spec, steps, len(bad), pack, char_lengths, sources, layout)
    run.log_metrics(0, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    outputs = {"docs": "docs", "report": "report", **({"dataset": "dataset"} if spec.tokenizer else {}),
               **({"val": "val"} if spec.tokenizer and spec.val_fraction > 0 else {})}
    if bad:
        outputs["quarantine"] = quarantine_rel
    return StageResult(metrics=metrics, outputs=outputs)


def _split(docs, fraction: float, seed: int):
    if fraction <= 0:
        return docs, None

    def held(row) -> bool:
        return is_heldout(row, fraction, seed)

    return docs.filter(lambda r: not held(r)), docs.filter(held)


def _tokenize_and_pack(docs, spec: DataStage, layout: str, ctx: Context):
    import ray.data

    from forge_ray.data.pack import TokenizeBatch

    with input_dir(ctx, spec.tokenizer, "tokenizer") as tok_dir:
        packed = docs.map_batches(
            TokenizeBatch, fn_constructor_kwargs={"tokenizer_dir": str(tok_dir), "layout": layout,
                                                  "seq_len": spec.seq_len, "packing": spec.packing},
            batch_size=1024, batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
        ).materialize()
    totals: dict = {"documents": 0, "tokens": 0, "rows": 0, "pad_tokens": 0, "truncated": 0,
                    "dropped_no_target": 0, "doc_lengths": []}
    for row in packed.select_columns(["pack_stats"]).iter_rows():
        if row["pack_stats"]:
            for k, v in json.loads(row["pack_stats"]).items():
                totals[k] = totals[k] + v
    return packed.drop_columns(["pack_stats"]), totals


def _top_sources(docs, k: int = 10) -> list[dict]:
    frame = docs.select_columns(["source", "meta", "text"]).to_pandas()
    frame["path"] = [json.loads(m)["path"] for m in frame["meta"]]
    frame["chars"] = frame["text"].str.len()
    top = frame.groupby(["source", "path"])["chars"].agg(["count", "sum"]).sort_values("sum", ascending=False).head(k)
    return [{"source": int(s), "path": p, "docs": int(c), "chars": int(n)} for (s, p), (c, n) in top.iterrows()]


def _report(rdir, spec, steps, n_bad, pack, char_lengths, sources, layout) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = pack.get("doc_lengths") or char_lengths
    unit = "tokens" if pack.get("doc_lengths") else "characters"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths, bins=min(50, max(5, len(set(lengths)))), color="#3b6ea8")
    ax.set_xlabel(f"document length ({unit})")
    ax.set_ylabel("documents")
    ax.set_title(f"{spec.name}: {len(lengths)} documents")
    fig.tight_layout()
    fig.savefig(rdir / "lengths.png", dpi=100)
    plt.close(fig)

    first, last = steps[0], steps[-1]
    metrics = {"docs_in": first.docs_in, "docs_out": last.docs_out, "quarantined": n_bad, "layout": layout,
               **{f"{s.name}_removed": s.details["removed"] for s in steps if "removed" in s.details}}
    pii = next((s for s in steps if s.name == "pii"), None)
    if pii and pii.details.get("enabled", True):
        metrics["pii_replaced"] = sum(pii.details["replaced"].values())
    if pack:
        metrics.update({k: pack[k] for k in ("val_rows", "val_tokens") if k in pack})
        metrics.update(tokens=pack["tokens"], rows=pack["rows"], pad_fraction=pack["pad_tokens"] / max(
            pack["rows"] * spec.seq_len, 1), truncated=pack["truncated"], dropped_no_target=pack["dropped_no_target"],
                       seq_len=spec.seq_len)
        metrics["mean_doc_tokens"] = float(np.mean(pack["doc_lengths"])) if pack["doc_lengths"] else 0.0
    report = {"steps": [asdict(s) for s in steps], "metrics": metrics, "top_sources": sources,
              "pack": {k: v for k, v in pack.items() if k != "doc_lengths"}}
    (rdir / "report.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Data report: {spec.name}", "", "| step | docs in | docs out | details |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.docs_in} | {s.docs_out} | {json.dumps(s.details)} |" for s in steps]
    lines += ["", "## Top sources", "", "| source | path | docs | chars |", "|---|---|---|---|"]
    lines += [f"| {s['source']} | {s['path']} | {s['docs']} | {s['chars']} |" for s in sources]
    lines += ["", "![lengths](lengths.png)", ""]
    (rdir / "report.md").write_text("\n".join(lines))
    return metrics
