"""The data preparation pipeline on Ray Data: read → validate/quarantine → scrub PII → filter
→ exact dedup → near dedup (MinHash LSH) → decontaminate → mix → tokenize + pack.

Each step reads a Ray Data dataset and returns one, plus what it removed or changed, so
the stage can report documents in/out per step. Only small things come back to the driver:
counts, duplicate *ids* (never documents), and the eval n-grams it broadcasts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forge_ray.data import clean
from forge_ray.data.sources import DataError, row_error
from forge_ray.spec.stages import CleanSpec, DataStage

LAYOUT_BY_FORMAT = {"text": "pretrain", "chat": "sft", "preference": "preference", "prompt_answer": "prompt",
                    "image_text": "pretrain"}


@dataclass
class StepReport:
    name: str
    docs_in: int
    docs_out: int
    details: dict[str, Any] = field(default_factory=dict)


def layout_of(spec: DataStage) -> str:
    """What the rows are for: set explicitly, else from the sources' formats (text if mixed)."""
    if spec.layout != "auto":
        return spec.layout
    layouts = {LAYOUT_BY_FORMAT[s.format] for s in spec.sources}
    return layouts.pop() if len(layouts) == 1 else "pretrain"


# ------------------------------------------------------------------ validation


def split_errors(ds, spec: DataStage, quarantine_path: str | None) -> tuple[Any, StepReport, list[dict]]:
    """Fail on the first bad row, or move bad rows to quarantine (capped by max_bad_fraction)."""
    ds = ds.materialize()
    total = ds.count()
    bad_ds = ds.filter(lambda r: r["error"] != "")
    bad_rows = sorted(bad_ds.take_all(), key=lambda r: (r["file"], r["line"]))
    good = ds.filter(lambda r: r["error"] == "")
    if bad_rows and spec.on_error == "fail":
        raise row_error(bad_rows[0])
    quarantined = [{"file": r["file"], "line": r["line"] if r["line"] >= 0 else None,
                    "problem": json.loads(r["error"])[0], "hint": json.loads(r["error"])[1]} for r in bad_rows]
    fraction = len(bad_rows) / max(total, 1)
    report = StepReport("validate", total, total - len(bad_rows), {"quarantined": len(bad_rows),
                                                                   "bad_fraction": fraction})
    if fraction > spec.max_bad_fraction:
        first = bad_rows[0]
        raise DataError(first["file"], None,
                        f"{len(bad_rows)} of {total} rows are bad ({fraction:.1%} > max_bad_fraction "
                        f"{spec.max_bad_fraction:.1%}); first: line {first['line']}: {json.loads(first['error'])[0]}",
                        f"see {quarantine_path}" if quarantine_path else "")
    return good, report, quarantined


# ------------------------------------------------------------------ scrub and filter


def _scrub_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    texts, payloads, counts = [], [], []
    for text, payload in zip(batch["text"], batch["payload"]):
        new_text, c = clean.scrub_pii(text)
        if payload:
            obj = json.loads(payload)
            obj = _scrub_obj(obj, c)
            payload = json.dumps(obj, ensure_ascii=False)
        texts.append(new_text)
        payloads.append(payload)
        counts.append(json.dumps(c))
    return {**batch, "text": np.array(texts, dtype=object), "payload": np.array(payloads, dtype=object),
            "pii": np.array(counts, dtype=object)}


def _scrub_obj(obj: Any, counts: dict) -> Any:
    """Scrub every string inside a structured record (chat messages, prompts, answers)."""
    if isinstance(obj, str):
        new, _ = clean.scrub_pii(obj)  # counted once, on the text view
        return new
    if isinstance(obj, list):
        return [_scrub_obj(x, counts) for x in obj]
    if isinstance(obj, dict):
        return {k: (v if k in ("role", "image_path", "image_bytes") else _scrub_obj(v, counts)) for k, v in obj.items()}
    return obj


def scrub(ds, enabled: bool) -> tuple[Any, StepReport]:
    if not enabled:
        n = ds.count()
        return ds, StepReport("pii", n, n, {"enabled": False})
    ds = ds.map_batches(_scrub_batch, batch_format="numpy").materialize()
    totals: dict[str, int] = {}
    changed = 0
    for row in ds.select_columns(["pii"]).iter_rows():
        c = json.loads(row["pii"])
        changed += bool(c)
        for k, v in c.items():
            totals[k] = totals.get(k, 0) + v
    n = ds.count()
    return ds, StepReport("pii", n, n, {"docs_changed": changed, "replaced": totals})


def length_filter(ds, cfg: CleanSpec) -> tuple[Any, StepReport]:
    n_in = ds.count()
    lo, hi = cfg.min_chars, cfg.max_chars
    ds = ds.filter(lambda r: len(r["text"]) >= lo and (hi is None or len(r["text"]) <= hi)).materialize()
    n_out = ds.count()
    return ds, StepReport("length_filter", n_in, n_out, {"removed": n_in - n_out, "min_chars": lo, "max_chars": hi})


# ------------------------------------------------------------------ dedup


def _dedup_key(row: dict) -> str:
    return clean.content_hash(clean.document_content(row))


class _Deduplicated:
    """Row filter: rows of the sources deduplication may remove (not an augment run's corpus)."""

    def __init__(self, exempt: frozenset[int]):
        self.exempt = exempt

    def __call__(self, row: dict) -> bool:
        return int(row["source"]) not in self.exempt


def exact_dedup(ds, exempt: frozenset[int] = frozenset()) -> tuple[Any, StepReport, set[str]]:
    """Keep the smallest doc_id of each group of identical (normalised) contents; rows of the
    ``exempt`` sources are neither removed nor compared."""
    import ray

    n_in = ds.count()
    candidates = ds.filter(_Deduplicated(exempt)).materialize() if exempt else ds
    if exempt and not candidates.count():  # every row is exempt (an augment run's corpus alone)
        return ds, StepReport("exact_dedup", n_in, n_in, {"removed": 0, "exempt_rows": n_in}), set()
    keys = candidates.map(lambda r: {"key": _dedup_key(r), "doc_id": r["doc_id"]})
    groups = keys.groupby("key").map_groups(_all_but_first, batch_format="numpy")
    drop = {r["doc_id"] for r in groups.iter_rows()}
    drop_ref = ray.put(drop)
    ds = ds.filter(_NotIn(drop_ref)).materialize()
    return ds, StepReport("exact_dedup", n_in, ds.count(), {"removed": len(drop)}), drop


def _all_but_first(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids = sorted(group["doc_id"].tolist())
    return {"doc_id": np.array(ids[1:], dtype=object)}


class _Broadcast:
    """A value put in the object store once by the driver, fetched once per Ray Data worker."""

    def __init__(self, ref):
        self.ref, self._value = ref, None

    @property
    def value(self):
        if self._value is None:
            import ray

            self._value = ray.get(self.ref)
        return self._value


class _NotIn(_Broadcast):
    """Row filter: keep rows whose doc_id is not in the broadcast set."""

    def __call__(self, row: dict) -> bool:
        return row["doc_id"] not in self.value


def _signature_batch(cfg: CleanSpec, seed: int):
    params = clean.minhash_params(cfg.num_perm, seed)
    bands, rows = clean.lsh_params(cfg.minhash_threshold, cfg.num_perm)

    def fn(batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"band": [], "doc_id": [], "sig": []}
        for doc_id, text in zip(batch["doc_id"], batch["text"]):
            sig = clean.minhash(text, cfg.shingle_size, params)
            for key in clean.band_keys(sig, bands, rows):
                out["band"].append(key)
                out["doc_id"].append(doc_id)
                out["sig"].append(sig)
        return out

    return fn


def _verified_edges(threshold: float):
    def fn(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(group["doc_id"].astype(str))
        ids = group["doc_id"][order]
        sigs = np.stack(group["sig"])[order] if len(ids) else np.zeros((0, 1))
        a, b = [], []
        for i in range(1, len(ids)):  # link each member to the bucket's first when truly similar
            if clean.estimated_jaccard(sigs[0], sigs[i]) >= threshold:
                a.append(ids[0])
                b.append(ids[i])
        return {"a": np.array(a, dtype=object), "b": np.array(b, dtype=object)}

    return fn


def near_dedup(ds, cfg: CleanSpec, seed: int, exempt: frozenset[int] = frozenset()) -> tuple[Any, StepReport, set[str]]:
    """MinHash LSH: band keys grouped by Ray Data, candidate pairs verified on signatures,
    connected components (union-find on duplicate *ids*) keep their smallest doc_id; rows of
    the ``exempt`` sources are left out."""
    import ray

    n_in = ds.count()
    candidates = ds.filter(_Deduplicated(exempt)).materialize() if exempt else ds
    if exempt and not candidates.count():
        return ds, StepReport("near_dedup", n_in, n_in, {"removed": 0, "exempt_rows": n_in}), set()
    exploded = candidates.map_batches(_signature_batch(cfg, seed), batch_format="numpy")
    edges = exploded.groupby("band").map_groups(_verified_edges(cfg.minhash_threshold), batch_format="numpy")
    uf = clean.UnionFind()
    n_edges = 0
    for e in edges.iter_rows():
        uf.union(e["a"], e["b"])
        n_edges += 1
    drop = uf.removed()
    ds = ds.filter(_NotIn(ray.put(drop))).materialize()
    bands, rows = clean.lsh_params(cfg.minhash_threshold, cfg.num_perm)
    return ds, StepReport("near_dedup", n_in, ds.count(), {"removed": len(drop), "candidate_edges": n_edges,
                                                           "bands": bands, "rows": rows,
                                                           "threshold": cfg.minhash_threshold}), drop


# ------------------------------------------------------------------ decontamination


MIN_DECONTAM_WORDS = 8


def eval_ngrams(paths: list[str], n: int) -> dict[int, set[str]]:
    """Word n-grams of each string field of the eval files, by length: ``n`` words, or the
    whole field when it is shorter (but at least 8 words, so that common phrases don't
    remove training documents)."""
    grams: dict[int, set[str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                for value in json.loads(line).values():
                    if not isinstance(value, str):
                        continue
                    size = min(n, len(clean.words(value)))
                    if size >= MIN_DECONTAM_WORDS:
                        grams.setdefault(size, set()).update(clean.ngrams(value, size))
    return grams


class _Contaminated(_Broadcast):
    """True for rows sharing an n-gram with the broadcast eval n-grams (by length)."""

    def __call__(self, row: dict) -> bool:
        return any(grams & clean.ngrams(row["text"], size) for size, grams in self.value.items())


def decontaminate(ds, cfg: CleanSpec) -> tuple[Any, StepReport]:
    import ray

    n_in = ds.count()
    if not cfg.decontaminate:
        return ds, StepReport("decontaminate", n_in, n_in, {"eval_files": 0})
    grams = eval_ngrams(cfg.decontaminate, cfg.decontam_ngram)
    test = _Contaminated(ray.put(grams))
    ds = ds.filter(lambda r: not test(r)).materialize()
    n_out = ds.count()
    return ds, StepReport("decontaminate", n_in, n_out, {"removed": n_in - n_out, "n": cfg.decontam_ngram,
                                                         "eval_ngrams": sum(len(g) for g in grams.values())})


# ------------------------------------------------------------------ mixing


def _replicate(rates: dict[int, float], seed: int):
    """Each row is repeated floor(rate) times, plus once more with probability frac(rate),
    drawn from (seed, content): reproducible, independent of block layout and file names."""
    def fn(row: dict) -> list[dict]:
        rate = rates.get(int(row["source"]), 0.0)
        u = clean.document_draw(row, seed)
        return [row] * (int(rate) + (u < rate - int(rate)))

    return fn


def mix(ds, spec: DataStage) -> tuple[Any, StepReport]:
    """With ``mix_total``: about that many rows, each source in proportion to its weight
    (sources smaller than their share are repeated), reproducibly by seed."""
    n_in = ds.count()
    if spec.mix_total is None:
        return ds, StepReport("mix", n_in, n_in, {"mode": "all rows once"})
    counts = {int(k): int(v) for k, v in ds.groupby("source").count().to_pandas().values}
    weights = np.array([s.weight for s in spec.sources], dtype=float)
    targets = weights / weights.sum() * spec.mix_total
    rates = {i: float(targets[i] / counts[i]) for i in counts if counts[i]}
    out = ds.flat_map(_replicate(rates, spec.seed)).materialize()
    drawn = {int(k): int(v) for k, v in out.groupby("source").count().to_pandas().values}
    per_source = {i: {"available": counts.get(i, 0), "target": round(float(targets[i]), 1), "drawn": drawn.get(i, 0)}
                  for i in range(len(spec.sources))}
    return out, StepReport("mix", n_in, out.count(), {"per_source": per_source, "total": spec.mix_total})
