"""Files as datasets: CSV, JSON lines and Parquet read as River reads a CSV, and every row that
cannot be read named by its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from riverrun.producers.files import DatasetError, FileOptions, read_file, summarize

CSV = """id,age,city,joined,label
a1,31,Oslo,2024-01-02,1
a2,40.5,Rome,2024-01-03T12:00:00+00:00,0
a3,,Oslo,2024-01-04,1
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_csv_reads_with_inferred_types_a_key_a_label_and_missing_values(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", CSV)
    options = FileOptions(target="label", key="id", types={"joined": "date"})
    rows = list(read_file(path, options))
    assert [r.key for r in rows] == ["a1", "a2", "a3"]
    assert [r.label for r in rows] == [1, 0, 1]
    assert rows[0].features == {"age": 31, "city": "Oslo", "joined": 1704153600.0}
    assert rows[1].features["age"] == 40.5
    assert "age" not in rows[2].features  # an empty value is a missing feature
    summary = summarize(path, options)
    assert summary.features == {"age": "number", "city": "category", "joined": "date"}
    assert summary.rows == 3


def test_json_lines_and_parquet_read_the_same_records_as_the_csv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    options = FileOptions(target="label", key="id")
    records = [{"id": "a1", "age": 31, "city": "Oslo", "label": True},
               {"id": "a2", "age": 40.5, "city": "Rome", "label": False}]  # fmt: skip
    jsonl = write(tmp_path, "people.jsonl",
                  '{"id": "a1", "age": 31, "city": "Oslo", "label": true}\n'
                  '{"id": "a2", "age": 40.5, "city": "Rome", "label": false}\n')  # fmt: skip
    parquet = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    from_json = [(r.features, r.label, r.key) for r in read_file(jsonl, options)]
    from_parquet = [(r.features, r.label, r.key) for r in read_file(str(parquet), options)]
    assert from_json == from_parquet == [({"age": 31, "city": "Oslo"}, True, "a1"),
                                         ({"age": 40.5, "city": "Rome"}, False, "a2")]


@pytest.mark.parametrize(("name", "text", "options", "says"), [
    ("extra.csv", "x,label\n1,0\n2,1,9\n", FileOptions(target="label"), "extra.csv:3"),
    ("word.csv", "x,label\n1,0\nabc,1\n", FileOptions(target="label", types={"x": "number"}),
     "word.csv:3"),
    ("broken.jsonl", '{"x": 1, "label": 0}\n{"x": \n', FileOptions(target="label"),
     "broken.jsonl:2"),
    ("nolabel.csv", "x,y\n1,0\n", FileOptions(target="label"), "label"),
])  # fmt: skip
def test_a_row_that_cannot_be_read_stops_the_read_naming_file_and_line(
    tmp_path: Path, name: str, text: str, options: FileOptions, says: str
) -> None:
    with pytest.raises(DatasetError, match=says):
        list(read_file(write(tmp_path, name, text), options))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list(read_file(str(tmp_path / "nope.csv"), FileOptions()))
