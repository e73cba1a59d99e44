"""Teacher-driven study material: what to ask a teacher model about each chunk of a document,
and how to keep only what the chunk supports — free of Ray and of any model, so every filter is
unit-tested.

Why filters: a teacher (especially a small one, or a rented one having a bad day) writes
answers the passage does not contain, invents part numbers, or answers in no recognisable
format. An augmented corpus teaches whatever it holds, so every item must be *grounded*:

- ``qa``: a question and an answer, the answer (normalised) found in the chunk;
- ``paraphrase``: every number, code and proper name in the rewrite occurs in the chunk;
- ``relations`` (EntiGraph, arXiv 2409.07431): two entities of the chunk, the teacher's account
  of how they relate naming both, with the same identifier check.

Each rejected item is counted by reason (``unparseable``, ``ungrounded``), never silently lost.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

PROMPTS = {
    "qa": ("Read the passage and write questions a colleague might ask about it, each answered from the passage "
           "alone. Write every pair as two lines:\nQ: <question>\nA: <short answer, copied from the passage>\n\n"
           "Passage ({entity}):\n{chunk}"),
    "paraphrase": ("Rewrite the passage in your own words. Keep every name, number and code exactly as written and "
                   "add nothing that it does not say.\n\nPassage ({entity}):\n{chunk}"),
    "relations": ("Passage ({entity}):\n{chunk}\n\nHow are {a} and {b} related, according to the passage? Answer in "
                  "one or two sentences that name both."),
}

_QA = re.compile(r"^\s*Q\s*[:.)]\s*(?P<q>.+?)\s*\n\s*A\s*[:.)]\s*(?P<a>.+?)\s*$", re.MULTILINE)
#: identifiers a rewrite must not invent: anything with a digit (numbers, codes like SM-7828)
_NUMBERISH = re.compile(r"(?<![\w#-])[\w#-]*\d[\w#-]*")
_NAME = re.compile(r"(?<![\w#-])(?:[A-Z][\w-]+)(?:[ \t]+[A-Z][\w-]+)*")  # a name never spans a line break
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n\s*)([A-Z][\w-]+)")


@dataclass(frozen=True)
class Request:
    """One prompt to the teacher, with the provenance its items will carry."""

    task: str
    source_doc: str
    start: int
    end: int
    chunk: str
    entity: str
    prompt: str
    pair: tuple[str, str] | None = None


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w#-]+", " ", text.lower()).split())


def answer_grounded(answer: str, chunk: str) -> bool:
    """The answer — or its normalised form (case, punctuation, spacing) — occurs in the chunk."""
    a = answer.strip().rstrip(".")
    return bool(a) and (a in chunk or f" {normalise(a)} " in f" {normalise(chunk)} ")


def invented(text: str, chunk: str) -> list[str]:
    """The numbers, codes and proper names in ``text`` that ``chunk`` does not contain (a name
    that only starts a sentence is not counted: "The", "It", …)."""
    norm_chunk = f" {normalise(chunk)} "
    starters = set(_SENTENCE_START.findall(text))
    out = []
    for token in _NUMBERISH.findall(text):
        if f" {normalise(token)} " not in norm_chunk:
            out.append(token)
    for name in _NAME.findall(text):
        words = name.split()
        if len(words) == 1 and words[0] in starters:
            continue
        if f" {normalise(name)} " not in norm_chunk and not all(f" {normalise(w)} " in norm_chunk for w in words):
            out.append(name)
    return out


#: capitalised only because they start a sentence: never entities
_FUNCTION_WORDS = set("""a an the it its this that these those they their them he she his her we our you your i
in on at for from to of by with as and or but if when while where which who what how why there here then so
all any each every some no not one two also after before during since until note see ask questions""".split())


def entities(chunk: str) -> list[str]:
    """Candidate entities of a chunk: proper names and codes, in order of first appearance (a
    capitalised function word — "The", "It", "When" — is not one)."""
    seen: list[str] = []
    for m in sorted([*(_NAME.finditer(chunk)), *re.finditer(r"\b[A-Z]{1,4}-\d{2,}\b", chunk)], key=lambda m: m.start()):
        words = m.group(0).split()
        while words and words[0].lower() in _FUNCTION_WORDS:
            words = words[1:]
        name = " ".join(words)
        if name and name not in seen:
            seen.append(name)
    return seen


def requests(doc_id: str, chunks: list, entity: str, tasks: list[str], prompts: dict[str, str], samples: int,
             pairs_per_chunk: int, rng: random.Random) -> list[Request]:
    """Every prompt for one document's chunks (``chunks``: :class:`~forge_ray.eval.retrieval.Chunk`)."""
    out = []
    for c in chunks:
        for task in tasks:
            template = prompts.get(task) or PROMPTS[task]
            if task == "relations":
                names = entities(c.text)
                pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
                for a, b in rng.sample(pairs, min(pairs_per_chunk, len(pairs))):
                    out += [Request(task, doc_id, c.start, c.end, c.text, entity,
                                    template.format(chunk=c.text, entity=entity, a=a, b=b), (a, b))] * samples
            else:
                out += [Request(task, doc_id, c.start, c.end, c.text, entity,
                                template.format(chunk=c.text, entity=entity))] * samples
    return out


def study_items(request: Request, output: str) -> tuple[list[str], str | None]:
    """The corpus texts one teacher output yields, or ``([], reason)`` with ``reason`` one of
    ``unparseable`` and ``ungrounded``. A QA output may hold several pairs: the grounded ones
    are kept (the reason then describes the first rejected pair only when none is kept)."""
    text = (output or "").strip()
    if request.task == "qa":
        pairs = [(m.group("q").strip(), m.group("a").strip()) for m in _QA.finditer(text)]
        if not pairs:
            return [], "unparseable"
        kept = [f"Q: {q}\nA: {a}" for q, a in pairs if answer_grounded(a, request.chunk)]
        return (kept, None) if kept else ([], "ungrounded")
    if not text or len(text) < 12:
        return [], "unparseable"
    if request.task == "relations" and request.pair and not all(normalise(x) in normalise(text) for x in request.pair):
        return [], "ungrounded"
    if invented(text, request.chunk):
        return [], "ungrounded"
    prefix = f"# {request.entity}\n\n" if request.entity and request.task == "paraphrase" else ""
    return [prefix + text], None
