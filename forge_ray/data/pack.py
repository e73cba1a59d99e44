"""Tokenisation and packing into fixed-length training rows, per layout.

Layouts (what the prepared rows are for):

- ``pretrain``: documents + EOS concatenated and cut into ``seq_len`` rows; each row has
  ``segment_ids`` (1, 2, … per document, 0 for padding) and ``position_ids`` restarting
  at each document so attention and positions can be confined to a document.
- ``sft``: whole conversations through the chat template, packed greedily without
  splitting; ``loss_mask`` is 1 exactly on assistant tokens (from the template's
  ``{% generation %}`` markers, or found by rendering: :mod:`forge_ray.data.chat_masks`).
- ``preference``: prompt via the chat template + chosen / rejected responses, padded;
  ``*_mask`` marks response tokens.
- ``prompt``: RL prompts rendered with the generation prompt; the reference answer kept.

Every function is pure (lists in, lists out) so packing invariants are unit-tested; the
Ray Data wrapper :class:`TokenizeBatch` loads the tokenizer once per actor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PackStats:
    documents: int = 0
    tokens: int = 0
    rows: int = 0
    pad_tokens: int = 0
    truncated: int = 0
    dropped_no_target: int = 0  # conversations whose assistant tokens were all cut
    doc_lengths: list[int] = field(default_factory=list)


def pack_documents(docs: list[list[int]], seq_len: int, pad_id: int, stats: PackStats | None = None) -> list[dict]:
    """Concatenate token lists (each already ends with EOS) and cut into ``seq_len`` rows."""
    stats = stats or PackStats()
    rows: list[dict] = []
    ids: list[int] = []
    seg: list[int] = []
    pos: list[int] = []
    segment = 0

    def flush():
        nonlocal ids, seg, pos, segment
        pad = seq_len - len(ids)
        stats.pad_tokens += pad
        rows.append({"input_ids": ids + [pad_id] * pad, "segment_ids": seg + [0] * pad,
                     "position_ids": pos + [0] * pad, "loss_mask": [1] * len(ids) + [0] * pad})
        ids, seg, pos, segment = [], [], [], 0

    for doc in docs:
        stats.documents += 1
        stats.tokens += len(doc)
        stats.doc_lengths.append(len(doc))
        start = 0
        while start < len(doc):
            segment += 1
            take = min(seq_len - len(ids), len(doc) - start)
            ids += doc[start:start + take]
            seg += [segment] * take
            pos += list(range(take))
            start += take
            if len(ids) == seq_len:
                flush()
    if ids:
        flush()
    stats.rows += len(rows)
    return rows


def pack_conversations(convs: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int,
                       stats: PackStats | None = None, packing: bool = True) -> list[dict]:
    """Greedy first-fit of whole conversations (ids, assistant mask) into rows; never split."""
    stats = stats or PackStats()
    rows: list[dict] = []
    current: list[tuple[list[int], list[int]]] = []
    used = 0

    def flush():
        nonlocal current, used
        ids, seg, pos, mask = [], [], [], []
        for k, (c_ids, c_mask) in enumerate(current, start=1):
            ids += c_ids
            seg += [k] * len(c_ids)
            pos += list(range(len(c_ids)))
            mask += c_mask
        pad = seq_len - len(ids)
        stats.pad_tokens += pad
        rows.append({"input_ids": ids + [pad_id] * pad, "segment_ids": seg + [0] * pad,
                     "position_ids": pos + [0] * pad, "loss_mask": mask + [0] * pad})
        current, used = [], 0

    for ids, mask in convs:
        stats.documents += 1
        if len(ids) > seq_len:
            ids, mask = ids[:seq_len], mask[:seq_len]
            stats.truncated += 1
        if not any(mask):
            stats.dropped_no_target += 1
            continue
        stats.tokens += len(ids)
        stats.doc_lengths.append(len(ids))
        if current and (not packing or used + len(ids) > seq_len):
            flush()
        current.append((ids, mask))
        used += len(ids)
    if current:
        flush()
    stats.rows += len(rows)
    return rows


def _column(values: list) -> Any:
    """Fixed-length token rows become one int32 matrix (an Arrow tensor column: compact and
    fast to move); ragged or text columns stay lists."""
    if values and isinstance(values[0], list) and len({len(v) for v in values}) == 1:
        return np.asarray(values, dtype=np.int32)
    return values


def pad_to(ids: list[int], mask: list[int], seq_len: int, pad_id: int) -> tuple[list[int], list[int], bool]:
    truncated = len(ids) > seq_len
    ids, mask = ids[:seq_len], mask[:seq_len]
    return ids + [pad_id] * (seq_len - len(ids)), mask + [0] * (seq_len - len(mask)), truncated


class TokenizeBatch:
    """Ray Data UDF: tokenizer loaded once per actor; a batch of documents → packed rows."""

    def __init__(self, tokenizer_dir: str, layout: str, seq_len: int, packing: bool = True):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.layout, self.seq_len, self.packing = layout, seq_len, packing
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        from forge_ray.data.chat_masks import has_generation_markers

        self.marked = has_generation_markers(self.tok.chat_template)

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """The conversation's token ids and its assistant mask: from the template's
        ``{% generation %}`` markers, or (an imported model's own template) by rendering."""
        if not add_generation_prompt and not self.marked:
            from forge_ray.data.chat_masks import assistant_token_mask

            return assistant_token_mask(self.tok, messages)
        out = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=
                                           add_generation_prompt, return_assistant_tokens_mask=not add_generation_prompt)
        ids = list(out["input_ids"])
        return ids, list(out.get("assistant_masks", [0] * len(ids)))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        stats = PackStats()
        texts, payloads = list(batch["text"]), [json.loads(p) if p else {} for p in batch["payload"]]
        if self.layout == "pretrain":
            encoded = self.tok(texts, add_special_tokens=False)["input_ids"]
            rows = pack_documents([list(ids) + [self.tok.eos_token_id] for ids in encoded], self.seq_len, self.pad_id,
                                  stats)
        elif self.layout == "sft":
            rows = pack_conversations([self.chat_ids(p["messages"]) for p in payloads], self.seq_len, self.pad_id,
                                      stats, self.packing)
        elif self.layout == "preference":
            rows = [self._pair(p, stats) for p in payloads]
            stats.rows = len(rows)
        else:  # prompt
            rows = []
            for p in payloads:
                ids, _ = self.chat_ids([{"role": "user", "content": p["prompt"]}], add_generation_prompt=True)
                rows.append({"prompt_ids": ids, "prompt": p["prompt"], "answer": p.get("answer", "")})
                stats.documents += 1
                stats.tokens += len(ids)
                stats.doc_lengths.append(len(ids))
            stats.rows = len(rows)
        out: dict[str, Any] = {k: _column([r[k] for r in rows]) for k in (rows[0] if rows else {})}
        # per-batch statistics travel with the first row of the batch (summed by the stage)
        stat = json.dumps({k: v for k, v in stats.__dict__.items()})
        out["pack_stats"] = [stat] + [""] * (len(rows) - 1)
        return out if rows else {"pack_stats": []}

    def _pair(self, p: dict, stats: PackStats) -> dict:
        prompt_ids, _ = self.chat_ids([{"role": "user", "content": p["prompt"]}], add_generation_prompt=True)
        row = {}
        for side in ("chosen", "rejected"):
            full_ids, full_mask = self.chat_ids([{"role": "user", "content": p["prompt"]},
                                                 {"role": "assistant", "content": p[side]}])
            ids, mask, truncated = pad_to(full_ids, full_mask, self.seq_len, self.pad_id)
            stats.truncated += truncated
            stats.tokens += len(full_ids)
            row[f"{side}_ids"], row[f"{side}_mask"] = ids, mask
        stats.documents += 1
        stats.doc_lengths.append(len(prompt_ids))
        return row
