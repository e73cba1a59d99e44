"""One document (or one record) in, its augmented rows out — the per-row work of the ``augment``
stage, kept free of Ray so it can be tested and reused. Every row carries provenance: the source
document's id, the strategy that made it, which copy, and the character span of the source it
restates (the whole document for ``permute``; the record for ``render``).

A per-source random generator (seeded by the stage seed and the document id) makes the output
independent of the order in which Ray Data hands documents out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from forge_ray.knowledge.model_free import FIELD_TEMPLATES, permute, render, title


@dataclass(frozen=True)
class ModelFreeStrategies:
    """How many of each augmentation a source gets."""

    multiplicity: int = 1        # copies of the original document
    permute: int = 3             # sentence-shuffled copies (restated) per document
    render: int = 4              # phrasings per record
    templates: tuple[str, ...] = FIELD_TEMPLATES
    field_templates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # entity → short names to restate
    restate: bool = True         # permuted sentences get the entity's full name where they lost it
    split: bool = False          # compound sentences may come as entity-led clauses


def _rng(seed: int, source_id: str) -> random.Random:
    return random.Random(f"{seed}:{source_id}")


def augment_document(doc_id: str, text: str, how: ModelFreeStrategies, seed: int = 0) -> list[dict]:
    """The original ``multiplicity`` times, then ``permute`` restated, shuffled copies."""
    if not text.strip():
        return []
    rng = _rng(seed, doc_id)
    span = [0, len(text)]
    rows = [{"text": text, "doc_id": f"{doc_id}#original-{i}", "source_doc": doc_id, "strategy": "original",
             "span": span} for i in range(how.multiplicity)]
    entity = title(text) if how.restate else None
    for i, copy in enumerate(permute(text, how.permute, rng, entity, how.aliases.get(entity or "", ()),
                                     restate_sentences=how.restate, split=how.split)):
        rows.append({"text": copy, "doc_id": f"{doc_id}#permute-{i}", "source_doc": doc_id, "strategy": "permute",
                     "span": span})
    return rows


def augment_record(source: str, row_number: int, record: dict, entity_field: str, how: ModelFreeStrategies,
                   seed: int = 0) -> list[dict]:
    """``render`` phrasings of one record; provenance is the records file and its row."""
    source_id = f"{source}:{row_number}"
    texts = render(record, entity_field, how.render, _rng(seed, source_id), how.templates, how.field_templates)
    return [{"text": t, "doc_id": f"{source_id}#render-{i}", "source_doc": source_id, "strategy": "render",
             "span": [row_number, row_number + 1]} for i, t in enumerate(texts)]
