"""Cleaning primitives as pure functions: PII scrubbing, normalisation for exact dedup,
MinHash signatures and LSH banding for near-duplicates, n-grams for decontamination.

They run inside Ray Data ``map_batches`` (see :mod:`forge_ray.data.pipeline`) and are
tested on their own. No Ray imports here.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

# ------------------------------------------------------------------ PII

_LUHN_CANDIDATE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
PII_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("PRIVATE_KEY", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    ("API_KEY", re.compile(r"\b(?:sk|pk|rk)[-_](?:live[-_]|test[-_])?[A-Za-z0-9]{16,}\b"
                           r"|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}\b"
                           r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\b")),
    ("IP_ADDRESS", re.compile(r"\b(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                              r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)")),
    ("PHONE", re.compile(r"(?<![\w-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)|\d{1,4})[ .-]?|\(\d{2,4}\)[ .-]?|\d{3}[ .-])"
                         r"\d{3,4}[ .-]\d{3,4}(?![\w-])")),
]
# `password = "..."`, `api_key: ...`: keep the name, hide the value
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b(\w*(?:api[_-]?key|secret|token|password|passwd)\w*\s*[:=]\s*['\"]?)"
                                r"([A-Za-z0-9_\-+/=.]{8,})")


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII with typed placeholders (``<EMAIL>``, ``<PHONE>``, …); returns counts."""
    counts: dict[str, int] = {}

    def card(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            counts["CREDIT_CARD"] = counts.get("CREDIT_CARD", 0) + 1
            return "<CREDIT_CARD>"
        return m.group(0)

    text = _LUHN_CANDIDATE.sub(card, text)
    for name, pattern in PII_PATTERNS:
        text, n = pattern.subn(f"<{name}>", text)
        if n:
            counts[name] = counts.get(name, 0) + n
    text, n = _SECRET_ASSIGNMENT.subn(lambda m: m.group(1) + "<SECRET>", text)
    if n:
        counts["SECRET"] = n
    return text, counts


# ------------------------------------------------------------------ exact dedup

_SPACES = re.compile(r"\s+")


def normalize_for_hash(text: str) -> str:
    """Case-, whitespace- and Unicode-form-insensitive view used for exact dedup."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def content_hash(text: str) -> str:
    return hashlib.sha1(normalize_for_hash(text).encode("utf-8")).hexdigest()


def document_content(row: dict) -> str:
    """What a document *is*: its payload (a chat, a preference pair) where it has one, else its text."""
    return row["payload"] if row.get("payload") else row["text"]


def document_draw(row: dict, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, the document's content): which split a document
    lands in, or whether it is repeated, must not depend on its ``doc_id``, which names the
    file it came from — and a run's output files carry a fresh random name per write, so
    ids keyed on them moved documents between train and validation on every rerun."""
    return int(content_hash(f"{seed}:{document_content(row)}")[:12], 16) / 16**12


def is_heldout(row: dict, fraction: float, seed: int) -> bool:
    """Whether a document is in the held-out split — of a data run, of a tokenizer run, and
    when evaluation recomputes a data run's split from its spec: one rule, stable whatever
    the read order, the machine or the file names."""
    return fraction > 0 and document_draw(row, seed) < fraction


# ------------------------------------------------------------------ MinHash LSH

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = np.uint64((1 << 61) - 1)


def words(text: str) -> list[str]:
    """Normalised word tokens: the unit of shingles and n-grams."""
    return _WORD.findall(normalize_for_hash(text))


def shingles(text: str, size: int) -> set[str]:
    w = words(text)
    if len(w) < size:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + size]) for i in range(len(w) - size + 1)}


def minhash_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = rng.randint(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    b = rng.randint(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(text: str, size: int, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signature (uint32 × num_perm) of the word shingles of ``text``."""
    a, b = params
    # a cryptographic base hash: crc32's linearity makes MinHash estimates badly biased
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest(), "little")
                          for s in shingles(text, size)), dtype=np.uint64)
    if hashes.size == 0:
        return np.full(a.shape, 0xFFFFFFFF, dtype=np.uint32)
    # a, b span [0, 2^61): a*h wraps modulo 2^64 before the prime modulus, which scrambles the
    # order enough for min-wise hashing (a, b < 2^32 would leave it nearly the order of h)
    with np.errstate(over="ignore"):
        values = (np.outer(hashes, a) + b) % _PRIME
    return (values.min(axis=0) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def lsh_params(threshold: float, num_perm: int, recall_at_threshold: float = 0.95) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest spurious candidates) for which a pair at
    exactly ``threshold`` similarity still becomes a candidate with the given probability.

    Recall is what banding decides; precision is restored afterwards, because every
    candidate pair is verified on its full signatures."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall_at_threshold:
            best = (bands, rows)
    return best


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[str]:
    """One key per band: documents sharing any key are near-duplicate candidates."""
    return [f"{i}:{hashlib.blake2b(signature[i * rows:(i + 1) * rows].tobytes(), digest_size=8).hexdigest()}"
            for i in range(bands)]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


# ------------------------------------------------------------------ decontamination


def ngrams(text: str, n: int) -> set[str]:
    w = words(text)
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


class UnionFind:
    """Groups documents linked by duplicate edges; the smallest id of a group is kept."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo

    def removed(self) -> set[str]:
        """Every member that is not its group's representative."""
        return {x for x in self.parent if self.find(x) != x}
