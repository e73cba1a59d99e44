"""Records tables read with their problems located: a missing entity column, an empty entity, a
malformed line and an empty file each name the file and row; every format gives the same rows."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forge_ray.data.sources import DataError
from forge_ray.knowledge.records import read_records

ROWS = [{"product": "Bonbul", "part_number": "SM-7828", "owner": "Team Osprey"},
        {"product": "Keilkrou", "part_number": "GM-1030", "owner": "Team Bison"}]


def test_every_format_gives_the_same_rows(tmp_path):
    (tmp_path / "p.csv").write_text("product,part_number,owner\n" + "".join(
        f"{r['product']},{r['part_number']},{r['owner']}\n" for r in ROWS))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    for name in ("p.csv", "p.jsonl", "p.parquet"):
        assert read_records(str(tmp_path / name), "product") == ROWS


BAD = [  # (file, content, the error it must give)
    ("nocol.csv", "name,part_number\nBonbul,SM-7828\n", r"nocol\.csv:1: no column 'product' \(columns: name, part_number\)"),
    ("blank.csv", "product,owner\nBonbul,Team Osprey\n,Team Bison\n", r"blank\.csv:3: row has no 'product'"),
    ("bad.jsonl", json.dumps(ROWS[0]) + "\n{not json\n", r"bad\.jsonl:2: not JSON"),
    ("list.jsonl", "[1, 2]\n", r"list\.jsonl:1: a record must be a JSON object"),
    ("empty.csv", "product,owner\n", r"empty\.csv: the records file has no rows"),
    ("table.xlsx", "x", r"must be \.csv, \.jsonl or \.parquet"),
    ("missing.csv", None, "does not exist"),
]


@pytest.mark.parametrize("name,content,error", BAD, ids=[b[0] for b in BAD])
def test_bad_records_name_the_file_and_row(tmp_path, name, content, error):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=error):
        read_records(str(tmp_path / name), "product")


@pytest.mark.parametrize("body, fields", [("A,1,T\nB,2\n", 2), ("A,1,T\nB,2,T,extra\n", 4)])
def test_a_csv_row_with_too_few_or_too_many_fields_names_its_line(tmp_path, body, fields):
    path = tmp_path / "t.csv"
    path.write_text("product,part,owner\n" + body)
    with pytest.raises(DataError, match=rf"t\.csv:3: row has {fields} fields, the header has 3"):
        read_records(str(path), "product")
