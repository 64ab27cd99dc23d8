"""File sources: type coercion per format, row and field in errors, column checks."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producers import CsvSource, FileSource, JsonLinesSource, ParquetSource
from streamml.errors import RecordError, SourceError
from streamml.records import DEMO_EVENTS_SCHEMA
from streamml.serde import AvroSerde, bundled_schema

SCHEMA = bundled_schema(DEMO_EVENTS_SCHEMA)
#: Marks a JSON key left out of the line (as opposed to null).
ABSENT = object()


def base_row(i: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"e{i}", "customer_id": f"c{i % 7:04d}", "event_time": 1_700_000_000_000 + i,
        "salary": 50000.5, "commission": 0.0, "age": 40, "elevel": 2, "car": 3, "zipcode": 4,
        "hvalue": 250000.0, "hyears": 10, "loan": 1234.5, "label": 1,
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path = path.with_suffix(".csv")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path = path.with_suffix(".jsonl")
    lines = [json.dumps({k: v for k, v in row.items() if v is not ABSENT}) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path = path.with_suffix(".parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS: dict[str, tuple[Callable[[Path, list[dict[str, Any]]], Path], type[FileSource]]] = {
    "csv": (write_csv, CsvSource),
    "jsonl": (write_jsonl, JsonLinesSource),
    "parquet": (write_parquet, ParquetSource),
}


def source_for(fmt: str, tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> FileSource:
    writer, source_class = WRITERS[fmt]
    return source_class(writer(tmp_path / "events", rows), SCHEMA, **kwargs)


@pytest.mark.parametrize(
    ("fmt", "field", "cell", "expected"),
    [
        ("csv", "age", "17", 17),
        ("csv", "age", " 18 ", 18),
        ("csv", "age", "19.0", 19),
        ("csv", "age", "", None),
        ("csv", "salary", "42", 42.0),
        ("csv", "salary", "1e5", 100000.0),
        ("csv", "customer_id", "007", "007"),
        ("csv", "event_time", "1700000000123", 1_700_000_000_123),
        ("csv", "label", "", None),
        ("jsonl", "age", 17, 17),
        ("jsonl", "age", 19.0, 19),
        ("jsonl", "age", "20", 20),
        ("jsonl", "age", None, None),
        ("jsonl", "age", ABSENT, None),
        ("jsonl", "salary", 42, 42.0),
        ("jsonl", "salary", "42.5", 42.5),
        ("jsonl", "customer_id", 7, "7"),
        ("jsonl", "event_time", 1_700_000_000_123, 1_700_000_000_123),
        ("parquet", "age", 17, 17),
        ("parquet", "age", 19.0, 19),
        ("parquet", "age", None, None),
        ("parquet", "salary", 42, 42.0),
        ("parquet", "customer_id", "007", "007"),
        ("parquet", "event_time", 1_700_000_000_123, 1_700_000_000_123),
    ],
)
def test_cells_are_coerced_to_the_schema_types(fmt: str, field: str, cell: Any, expected: Any, tmp_path: Path) -> None:
    rows = [base_row(0), base_row(1)]
    rows[1][field] = cell
    records = list(source_for(fmt, tmp_path, rows))
    assert len(records) == 2
    got = records[1][field]
    assert got == expected and type(got) is type(expected)
    # Every coerced record is one the encoder accepts.
    serde = AvroSerde(SCHEMA)
    for record in records:
        assert serde.decode(serde.encode(record), serde.headers) == record


@pytest.mark.parametrize(
    ("fmt", "field", "cell", "message"),
    [
        ("csv", "age", "abc", "row 17, field 'age': 'abc' is not an int"),
        ("csv", "age", "17.5", "row 17, field 'age': '17.5' is not an int"),
        ("csv", "age", "3000000000", "row 17, field 'age': '3000000000' is out of range for int"),
        ("csv", "salary", "lots", "row 17, field 'salary': 'lots' is not a double"),
        ("csv", "customer_id", "", "row 17, field 'customer_id': empty, but the field is not nullable"),
        ("jsonl", "age", "abc", "row 17, field 'age': 'abc' is not an int"),
        ("jsonl", "age", True, "row 17, field 'age': True is not an int"),
        ("jsonl", "event_time", None, "row 17, field 'event_time': empty, but the field is not nullable"),
        ("parquet", "age", 17.5, "row 17, field 'age': 17.5 is not an int"),
    ],
)
def test_a_bad_cell_names_the_data_row_and_field(fmt: str, field: str, cell: Any, message: str, tmp_path: Path) -> None:
    rows = [base_row(i) for i in range(20)]
    rows[16][field] = cell  # the 17th data row
    # A small chunk size puts the bad row in a later chunk: numbering must carry over.
    source = source_for(fmt, tmp_path, rows, chunk_size=5)
    iterator = iter(source)
    assert len(list(islice(iterator, 16))) == 16
    with pytest.raises(RecordError) as caught:
        next(iterator)
    assert str(caught.value) == message
    assert caught.value.row == 17 and caught.value.field == field


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_missing_required_column_fails_before_any_row(fmt: str, tmp_path: Path) -> None:
    rows = [base_row(i) for i in range(3)]
    for row in rows:
        del row["customer_id"], row["event_time"]
    with pytest.raises(SourceError, match="lacks required columns customer_id, event_time"):
        source_for(fmt, tmp_path, rows)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_nullable_columns_become_none(fmt: str, tmp_path: Path) -> None:
    rows = [base_row(i) for i in range(3)]
    for row in rows:
        del row["label"], row["loan"]
    records = list(source_for(fmt, tmp_path, rows))
    assert [r["label"] for r in records] == [None] * 3
    assert [r["loan"] for r in records] == [None] * 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_unknown_columns_are_dropped_with_one_warning(
    fmt: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{**base_row(i), "note": "x", "score": 3} for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="producers.files"):
        records = list(source_for(fmt, tmp_path, rows, chunk_size=4))
    assert all(set(r) == set(SCHEMA.field_names) for r in records)
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1
    assert "note, score" in warnings[0]


def test_a_file_that_does_not_exist_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        CsvSource(tmp_path / "nope.csv", SCHEMA)


@pytest.mark.parametrize(
    ("name", "content", "source_class"),
    [
        ("empty.csv", b"", CsvSource),
        ("broken.parquet", b"PAR1 this is not parquet", ParquetSource),
        ("broken.jsonl", b"{not json\n", JsonLinesSource),
    ],
)
def test_an_unreadable_file_is_a_source_error(
    name: str, content: bytes, source_class: type[FileSource], tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=f"cannot read {path}"):
        source_class(path, SCHEMA)


def test_a_malformed_row_is_a_source_error_naming_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "events", [base_row(i) for i in range(3)])
    path.write_text(path.read_text() + "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n")
    with pytest.raises(SourceError, match=r"cannot read .*events.csv .*line 5, saw 15"):
        list(CsvSource(path, SCHEMA))
