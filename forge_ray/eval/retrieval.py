"""The retrieval baseline: the same documents a model was trained on, chunked and indexed with
BM25 (``bm25s``), the top-k passages put in front of each question. A closed-book model is
only worth training if it answers as well as this, so every evaluation can show ``MODEL`` and
``MODEL + rag`` side by side on the same items — and recall@k of the gold source document, so
a poor RAG score can be told apart into "retrieval missed" and "reader failed".

Chunks carry provenance (document id, character span), so an item file can show, for every
answer, which passages were retrieved and whether the fact's own document was among them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    start: int  # character span in the document
    end: int
    text: str


def chunk_document(doc_id: str, text: str, max_chars: int = 600) -> list[Chunk]:
    """Paragraph-aligned chunks of at most ``max_chars`` (a longer paragraph is its own chunk),
    each with its character span; the document's first heading prefixes every chunk after the
    first, so a passage about "the part number" still says whose."""
    heading = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    spans, pos = [], 0
    for para in text.split("\n\n"):
        begin = text.find(para, pos)
        pos = begin + len(para)
        if para.strip():
            spans.append((begin, pos))
    chunks, current = [], None
    for a, b in spans:
        if current and b - current[0] > max_chars:
            chunks.append(current)
            current = None
        current = (current[0], b) if current else (a, b)
    if current:
        chunks.append(current)
    out = []
    for i, (a, b) in enumerate(chunks):
        body = text[a:b].strip()
        if i and heading and not body.startswith("#"):
            body = f"{heading}: {body}"
        out.append(Chunk(doc_id, a, b, body))
    return out


class BM25Index:
    """BM25 over chunks (``bm25s``, English stopwords removed, no stemming: part numbers, names
    and channel ids are matched as written)."""

    def __init__(self, chunks: list[Chunk]):
        import bm25s

        if not chunks:
            raise ValueError("nothing to index: no documents (or only empty ones)")
        self.chunks = chunks
        self._bm25s = bm25s
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize([c.text for c in chunks], stopwords="en", show_progress=False),
                         show_progress=False)

    def search(self, queries: list[str], k: int = 3) -> list[list[Chunk]]:
        k = min(k, len(self.chunks))
        tokens = self._bm25s.tokenize(queries, stopwords="en", show_progress=False)
        ids, _ = self.model.retrieve(tokens, k=k, show_progress=False)
        return [[self.chunks[int(i)] for i in row] for row in ids]


def recall_at_k(retrieved: list[list[Chunk]], gold_docs: list[set[str]]) -> float:
    """The share of questions whose every gold source document is among the retrieved chunks
    (a two-document question needs both)."""
    hits = [bool(gold) and gold <= {c.doc_id for c in chunks} for chunks, gold in zip(retrieved, gold_docs)]
    return sum(hits) / max(len(hits), 1)


def rag_prompt(question: str, passages: list[Chunk]) -> str:
    """The question with its passages in front (the reader sees them as context)."""
    context = "\n\n".join(p.text for p in passages)
    return f"{context}\n\nQuestion: {question}"


def same_document(a: str, b: str) -> bool:
    """Whether two document ids name the same file: equal, or one is the other's trailing path
    (``docs/products/x.md`` in a task row and ``products/x.md`` as the index read it)."""
    a, b = a.strip("/"), b.strip("/")
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def gold_retrieved(passages: list[Chunk], gold: list[str]) -> bool:
    """Every gold document is among the passages (a two-document question needs both)."""
    return bool(gold) and all(any(same_document(g, p.doc_id) for p in passages) for g in gold)


def documents_for_index(sources) -> list[tuple[str, str]]:
    """``(document id, text)`` of every document the retrieval section names. A ``run:`` source
    (already resolved to its Parquet corpus) keeps each row's original document id — the augment
    corpus's ``source_doc``, a data run's ``meta.path`` — so recall is measured against the
    documents the facts came from."""
    import json

    from forge_ray.data.sources import expand_source, iter_texts

    out = []
    for i, src in enumerate(sources):
        if not src.run:
            out += [(json.loads(r["meta"])["path"], r["text"]) for r in iter_texts([src])]
            continue
        import pyarrow.parquet as pq

        from forge_ray.data.sources import _read_bytes

        for sf in expand_source(src, i):
            import io

            table = pq.read_table(io.BytesIO(_read_bytes(sf.path)))
            cols = table.column_names
            texts = table["text"].to_pylist()
            if "source_doc" in cols:
                ids = table["source_doc"].to_pylist()
            elif "meta" in cols:
                ids = [json.loads(m).get("path", "") for m in table["meta"].to_pylist()]
            else:
                ids = [f"{sf.rel}:{j}" for j in range(len(texts))]
            out += list(zip(ids, texts))
    return out


def build_index(sources, chunk_chars: int) -> BM25Index:
    """A BM25 index over the chunks of every document (each document once, by id)."""
    seen, chunks = set(), []
    for doc_id, text in documents_for_index(sources):
        if doc_id in seen or not text.strip():
            continue
        seen.add(doc_id)
        chunks += chunk_document(doc_id, text, chunk_chars)
    return BM25Index(chunks)


def with_passages(rows: list[dict], index: BM25Index, k: int, max_context_chars: int,
                  gold_field: str) -> tuple[list[dict], float | None]:
    """Task rows whose prompts carry their top-k passages (cut to ``max_context_chars``; the
    question itself kept as ``question``, the passages shown as ``passages``, whether the gold
    documents are among them as ``gold_retrieved``), and recall@k of the gold documents in the
    top-k over the rows that name theirs (None when none does)."""
    retrieved = index.search([r["prompt"] for r in rows], k) if rows else []
    out, hits = [], []
    for row, passages in zip(rows, retrieved):
        kept, used = [], 0
        for p in passages:
            if used + len(p.text) > max_context_chars and kept:
                break
            kept.append(Chunk(p.doc_id, p.start, p.end, p.text[: max_context_chars - used]))
            used += len(kept[-1].text)
        gold = row.get(gold_field)
        new = {**row, "prompt": rag_prompt(row["prompt"], kept), "question": row["prompt"],
               "passages": [f"{p.doc_id}:{p.start}-{p.end}" for p in kept]}
        if isinstance(gold, list) and gold:
            new["gold_retrieved"] = gold_retrieved(kept, [str(g) for g in gold])
            hits.append(gold_retrieved(passages, [str(g) for g in gold]))
        out.append(new)
    return out, (sum(hits) / len(hits) if hits else None)
