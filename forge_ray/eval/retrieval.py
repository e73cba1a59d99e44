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
