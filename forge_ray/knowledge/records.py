"""Structured records — a products table, a teams sheet — as rows of facts about an entity, read
from CSV, JSONL or Parquet with every problem located (file and row), so ``render`` can turn each
row into prose. A row is ``{column: value}``; the entity column names what the row is about."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from forge_ray.allowed_paths import require_allowed
from forge_ray.data.sources import DataError


def read_records(path: str, entity: str) -> list[dict]:
    """Every row of the table at ``path`` (``.csv``, ``.jsonl``, ``.parquet``); each must have a
    non-empty ``entity`` column. An empty table, a missing column, a row that is not an object
    and a malformed line are :class:`DataError` naming the file and row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(path, None, "records file does not exist", "check the records' path")
    require_allowed(str(p), "records file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if entity not in (reader.fieldnames or []):
                raise DataError(path, 1, f"no column {entity!r} (columns: {', '.join(reader.fieldnames or [])})",
                                "set `entity` to the column naming what each row is about")
            rows = []
            for i, r in enumerate(reader, start=2):  # line 1 is the header
                if None in r or None in r.values():  # more fields than the header, or fewer
                    named = sum(v is not None for k, v in r.items() if k is not None)
                    have = named + len(r.get(None) or [])  # DictReader keeps surplus fields under None
                    raise DataError(path, reader.line_num, f"row has {have} fields, the header has "
                                    f"{len(reader.fieldnames)} ({', '.join(reader.fieldnames)})",
                                    "quote fields that contain commas")
                rows.append((i, dict(r)))
    elif suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, i, f"not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(path, i, f"a record must be a JSON object, not {type(row).__name__}")
            rows.append((i, row))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        if entity not in table.column_names:
            raise DataError(path, None, f"no column {entity!r} (columns: {', '.join(table.column_names)})",
                            "set `entity` to the column naming what each row is about")
        rows = list(enumerate(table.to_pylist(), start=1))
    else:
        raise DataError(path, None, f"records must be .csv, .jsonl or .parquet, not {suffix or 'no extension'}")
    if not rows:
        raise DataError(path, None, "the records file has no rows")
    out = []
    for line, row in rows:
        if row.get(entity) in (None, ""):
            raise DataError(path, line, f"row has no {entity!r} (every record must name its entity)")
        out.append(row)
    return out
