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


def test_bad_records_name_the_file_and_row(tmp_path):
    (tmp_path / "nocol.csv").write_text("name,part_number\nBonbul,SM-7828\n")
    with pytest.raises(DataError, match=r"nocol\.csv:1: no column 'product' \(columns: name, part_number\)"):
        read_records(str(tmp_path / "nocol.csv"), "product")
    (tmp_path / "blank.csv").write_text("product,owner\nBonbul,Team Osprey\n,Team Bison\n")
    with pytest.raises(DataError, match=r"blank\.csv:3: row has no 'product'"):
        read_records(str(tmp_path / "blank.csv"), "product")
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not JSON"):
        read_records(str(tmp_path / "bad.jsonl"), "product")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"list\.jsonl:1: a record must be a JSON object"):
        read_records(str(tmp_path / "list.jsonl"), "product")
    (tmp_path / "empty.csv").write_text("product,owner\n")
    with pytest.raises(DataError, match=r"empty\.csv: the records file has no rows"):
        read_records(str(tmp_path / "empty.csv"), "product")
    with pytest.raises(DataError, match="does not exist"):
        read_records(str(tmp_path / "missing.csv"), "product")
