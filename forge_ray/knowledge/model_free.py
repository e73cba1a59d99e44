"""Model-free document augmentation: more phrasings of the same facts, no model needed.

Why: a fact seen in one phrasing is memorised but not *extractable* for entities never asked
about in training; several phrasings, shuffled sentence orders and the full entity name in every
sentence make it extractable (Allen-Zhu & Li, Physics of Language Models 3.1, arXiv 2309.14316).
Each strategy here is a pure function of its input and a seeded ``random.Random``, so an
augmented corpus is reproducible and testable:

- :func:`restate` — a sentence that refers to the document's entity by a pronoun ("It", "They",
  "Its") or by a short name gets the full name, so it keeps its subject wherever it lands;
- :func:`permute` — the sentences of each paragraph shuffled, every sentence kept exactly once;
  with ``split``, a compound sentence may instead appear as its :func:`clauses`, each a statement
  about the entity on its own — a second phrasing of a fact the document states once, with the
  fact right behind the entity's name ("Released in 2004, X is …" → "X is …" + "X: released in
  2004.");
- :func:`render` — a structured record (a table row: one entity, its fields) as prose in several
  phrasings, every field stated in each.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[#])")
_PRONOUN_START = re.compile(r"^(It|They|He|She|This|The team|The product|The service|The system)\b(?P<rest>.*)",
                            re.DOTALL)
_LABEL = re.compile(r"^\s*[A-Z][\w ]{0,30}:\s")
_POSSESSIVE_START = re.compile(r"^(Its|Their|His|Her)\b(?P<rest>.*)", re.DOTALL)


def sentences(paragraph: str) -> list[str]:
    """The sentences of a prose paragraph (line breaks inside it are spaces)."""
    text = " ".join(paragraph.split())
    return [s for s in _SENTENCE_END.split(text) if s]


@dataclass(frozen=True)
class Block:
    """A piece of a document: a prose paragraph (its sentences may move) or anything else kept as is
    (a heading, a list, a table, code)."""

    text: str
    prose: bool


def blocks(document: str) -> list[Block]:
    """Paragraphs split on blank lines; headings, list items, tables, code and labelled lines
    ("Q: …" / "A: …", "Key: value") are not prose — their order carries meaning."""
    out, in_code = [], False
    for part in re.split(r"\n\s*\n", document.strip()):
        first = part.lstrip()
        fenced = first.startswith("```")
        if fenced and part.count("```") % 2 == 1:
            in_code = not in_code
        labelled = "\n" in part.strip() and all(_LABEL.match(ln) for ln in part.strip().splitlines())
        structural = (in_code or fenced or labelled or first.startswith(("#", "-", "*", "|", ">", "    "))
                      or re.match(r"\d+\.\s", first))
        out.append(Block(part.strip(), prose=not structural))
    return out


def title(document: str) -> str | None:
    """The entity a document is about: its first Markdown heading, if any."""
    m = re.search(r"^#\s+(.+?)\s*$", document, re.MULTILINE)
    return m.group(1) if m else None


def restate(sentence: str, entity: str, aliases: tuple[str, ...] = ()) -> str:
    """``sentence`` with a leading pronoun (or an alias used as its subject) replaced by ``entity``."""
    s = sentence.strip()
    if m := _POSSESSIVE_START.match(s):
        return f"{entity}'s{m.group('rest')}"
    if m := _PRONOUN_START.match(s):
        rest = m.group("rest")
        if m.group(1) == "They":  # "They are based in X" → "Team Y is based in X"
            rest = re.sub(r"^\s+are\b", " is", rest)
            rest = re.sub(r"^\s+have\b", " has", rest)
        return f"{entity}{rest}"
    for alias in sorted(aliases, key=len, reverse=True):
        if alias and alias != entity and re.match(rf"{re.escape(alias)}\b", s) and not s.startswith(entity):
            return entity + s[len(alias):]
    return s


# a participle phrase: "first released in 2013", "maintained by Team X", "came out in 2015" is not one
_PARTICIPLE = r"(?:(?:first|then|later|originally|also|now)\s+)?[a-z]+(?:ed|en)\b"
_LEADING_PHRASE = re.compile(r"^(?P<phrase>[A-Z][a-z]+(?:ed|en)\b[^,;]*),\s+(?P<rest>.+)$", re.DOTALL)
_CLAUSE_BREAK = re.compile(rf"\s*;\s+|,\s+(?={_PARTICIPLE})")


def clauses(sentence: str, entity: str, aliases: tuple[str, ...] = ()) -> list[str]:
    """A compound sentence about ``entity`` as simple statements, each led by the entity: clauses
    split at semicolons and before a participle phrase, a leading participle phrase moved behind
    the main clause; a clause that is not about the entity by name or pronoun reads "ENTITY: …".
    A sentence with nothing to split (or a piece shorter than three words) comes back whole."""
    s = sentence.strip()
    end = s[-1] if s[-1:] in ".!?" else "."
    body = s.rstrip(".!?").strip()
    pieces = []
    if (m := _LEADING_PHRASE.match(body)) and m.group("rest").startswith(entity):
        body, pieces = m.group("rest"), [m.group("phrase")]
    pieces = [p for p in _CLAUSE_BREAK.split(body) if p] + pieces
    if len(pieces) < 2 or any(len(p.split()) < 3 for p in pieces):
        return [restate(s, entity, aliases)]
    out = []
    for piece in pieces:
        stated = restate(piece[0].upper() + piece[1:], entity, aliases)
        if not stated.startswith(entity):
            stated = f"{entity}: {piece[0].lower() + piece[1:] if piece[:2].istitle() else piece}"
        out.append(stated + end)
    return out


def permute(document: str, k: int, rng: random.Random, entity: str | None = None,
            aliases: tuple[str, ...] = (), restate_sentences: bool = True, split: bool = False) -> list[str]:
    """``k`` copies of ``document``, the sentences of each prose paragraph in a new order (each
    sentence exactly once, restated first so it keeps its subject); other blocks stay in place.
    With ``split`` (and an entity), each compound sentence comes either whole or as its
    :func:`clauses` — a coin toss per sentence and copy — and the clauses are shuffled with the rest."""
    entity = (entity or title(document)) if restate_sentences else None
    parts = blocks(document)
    copies = []
    for _ in range(k):
        out = []
        for block in parts:
            if not block.prose:
                out.append(block.text)
                continue
            said = []
            for sentence in sentences(block.text):
                if not entity:
                    said.append(sentence)
                elif split and rng.random() < 0.5:
                    said.extend(clauses(sentence, entity, aliases))
                else:
                    said.append(restate(sentence, entity, aliases))
            rng.shuffle(said)
            out.append(" ".join(said))
        copies.append("\n\n".join(out))
    return copies


#: default phrasings of one field of a record; {entity}, {field} (a readable column name), {value}
FIELD_TEMPLATES = (
    "The {field} of {entity} is {value}.",
    "{entity} has {field} {value}.",
    "{entity}'s {field}: {value}.",
    "For {entity}, the {field} is {value}.",
)


def field_name(column: str) -> str:
    return column.replace("_", " ").strip().lower()


def render(record: dict, entity_field: str, k: int, rng: random.Random,
           templates: tuple[str, ...] = FIELD_TEMPLATES, field_templates: dict[str, tuple[str, ...]] | None = None,
           ) -> list[str]:
    """``k`` paragraphs about the record's entity, each stating every non-empty field once, in a
    shuffled order and with a phrasing per field drawn from ``templates`` (or from
    ``field_templates[column]`` where the spec gives its own for that column)."""
    if entity_field not in record or record[entity_field] in (None, ""):
        raise KeyError(entity_field)
    entity = str(record[entity_field])
    fields = [c for c, v in record.items() if c != entity_field and v not in (None, "")]
    out = []
    for i in range(k):
        order = fields[:]
        rng.shuffle(order)
        said = []
        for j, column in enumerate(order):
            choices = (field_templates or {}).get(column) or templates
            template = choices[(i + j) % len(choices)]
            said.append(template.format(entity=entity, field=field_name(column), value=record[column]))
        out.append(" ".join(said))
    return out
