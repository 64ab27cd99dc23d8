"""Bad rows at ingestion: the accounting of a stopped run, skip/dead-letter lines, dry runs and resume ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers import CsvSource, SourceItem, SyntheticSource
from producers.dry_run import DryRunFailed, dry_run
from producers.rejections import (
    FILE_HEADER,
    ROW_HEADER,
    RejectedRow,
    RejectionLog,
    RowStopped,
    dead_letter,
    sent_before,
)
from producers.resume import resolve_id_column
from producers.rows import numbered_rows, row_id
from streamml.errors import ConfigError, RecordError
from streamml.records import DEMO_EVENTS_SCHEMA, DeadLetterReason
from streamml.serde import AvroSchema, bundled_schema, header_value

SCHEMA = bundled_schema(DEMO_EVENTS_SCHEMA)


@pytest.mark.parametrize(
    ("row", "counts", "expected"),
    [
        (202, {"delivered": 201, "failed": 0}, "rows 1-201 were sent and acknowledged"),
        (2, {"delivered": 1, "failed": 0}, "row 1 was sent and acknowledged"),
        (1, {"delivered": 0, "failed": 0}, "no rows were sent before it"),
        (
            202, {"delivered": 150, "failed": 0, "already_on_topic": 51},
            "rows 1-201 are on the topic (150 sent and acknowledged now, 51 already there)",
        ),
        (
            11, {"delivered": 7, "failed": 1, "skipped": 2},
            "7 of the 10 rows before it were sent and acknowledged (2 skipped as bad, 1 FAILED delivery)",
        ),
        (
            11, {"delivered": 4, "failed": 0, "unconfirmed": "6 records still undelivered after 30s"},
            "4 of the 10 rows before it were sent and acknowledged; "
            "the rest could not be confirmed: 6 records still undelivered after 30s",
        ),
    ],
)
def test_a_stopped_run_says_what_the_broker_has(row: int, counts: dict[str, object], expected: str) -> None:
    assert sent_before(row, **counts) == expected  # type: ignore[arg-type]


def test_a_stopped_row_keeps_the_record_error_class_row_and_field() -> None:
    error = RecordError("'abc' is not a double", row=202, field="salary")
    stopped = RowStopped(error, "rows 1-201 were sent and acknowledged", acknowledged=201)
    assert isinstance(stopped, RecordError) and stopped.exit_code == RecordError.exit_code == 1
    assert (stopped.row, stopped.field) == (202, "salary")
    assert str(stopped) == "row 202, field 'salary': 'abc' is not a double; rows 1-201 were sent and acknowledged"


def test_the_first_twenty_rejections_get_a_line_then_only_a_total() -> None:
    log = RejectionLog("skipped")
    lines = [
        log.add(RejectedRow(n, RecordError("'x' is not an int", row=n, field="age"), "coercion", None))
        for n in range(1, 26)
    ]
    assert lines[0] == "skipped row 1, field 'age': 'x' is not an int [coercion]"
    assert all(line is not None for line in lines[:20]) and lines[20:] == [None] * 5
    assert log.total() == "skipped 25 rows that do not fit the schema; 5 not shown above"
    assert RejectionLog("skipped").total() is None


def test_a_dead_letter_has_the_processor_reason_contract_and_the_row_as_json() -> None:
    raw = {"event_id": "e7", "customer_id": "c1", "salary": "abc", "age": float("nan")}
    rejected = RejectedRow(7, RecordError("'abc' is not a double", row=7, field="salary"), "coercion", raw)
    value, key, headers = dead_letter(
        rejected, source="csv(in.csv)", file="in.csv", key_field="customer_id", now_ms=1234
    )
    reason = DeadLetterReason.read(headers)
    assert reason["stage"] == "ingest" and reason["rule"] == "coercion" and reason["field"] == "salary"
    assert reason["message"] == "row 7, field 'salary': 'abc' is not a double"
    assert reason["violations"] == [{"field": "salary", "rule": "coercion", "message": "'abc' is not a double"}]
    assert (reason["source.topic"], reason["timestamp"]) == ("csv(in.csv)", "1234")
    assert (header_value(headers, FILE_HEADER), header_value(headers, ROW_HEADER)) == (b"in.csv", b"7")
    assert key == "c1"
    assert json.loads(value) == {"event_id": "e7", "customer_id": "c1", "salary": "abc", "age": None}


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("event_id,customer_id,event_time,age\n" + "".join(r + "\n" for r in rows))
    return path


def test_rows_after_a_bad_one_still_come(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", ["e1,c1,1,30", "e2,c2,2,abc", "e3,c3,3,31"])
    rows = list(numbered_rows(CsvSource(path, SCHEMA)))
    assert [r.number for r in rows] == [1, 2, 3]
    assert [r.error is None for r in rows] == [True, False, True]
    assert str(rows[1].error) == "row 2, field 'age': 'abc' is not an int"
    assert rows[1].raw == {"event_id": "e2", "customer_id": "c2", "event_time": "2", "age": "abc"}
    assert [row_id(r.item, "event_id") for r in rows] == ["e1", None, "e3"]


class ListSource:
    """A source of given records (an application's own, already typed)."""

    name = "list"
    schema = SCHEMA
    injected: dict[str, int] = {}

    def __init__(self, items: list[dict[str, object]]) -> None:
        self.items = items

    def __iter__(self) -> Iterator[SourceItem]:
        return iter(self.items)


def test_a_dry_run_counts_every_bad_row_by_rule(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", ["e1,c1,1,30", "e2,c2,2,abc", "e3,,3,31", "e4,c4,x,1"])
    report = dry_run(CsvSource(path, SCHEMA), key_field="customer_id")
    assert report.rows == 4 and not report.ok
    assert dict(report.bad) == {"coercion": 3}
    assert report.problems == (
        "row 2, field 'age': 'abc' is not an int [coercion]",
        "row 3, field 'customer_id': empty, but the field is not nullable [coercion]",
        "row 4, field 'event_time': 'x' is not a long [coercion]",
    )
    good = [r for r in SyntheticSource(3, seed=1) if isinstance(r, dict)]
    typed = dry_run(ListSource([good[0], {**good[1], "car": "red"}, good[2]]), key_field="customer_id")
    assert (typed.rows, dict(typed.bad)) == (3, {"encoding": 1})
    assert typed.problems == ("row 2, field 'car': 'red' is not of type null or int [encoding]",)
    assert DryRunFailed.exit_code == 2
    assert dry_run(SyntheticSource(50, seed=1), key_field="customer_id", limit=10).ok


def test_the_resume_id_column_defaults_to_event_id_and_must_exist() -> None:
    assert resolve_id_column(SCHEMA, None) == "event_id"
    assert resolve_id_column(SCHEMA, "customer_id") == "customer_id"
    with pytest.raises(ConfigError, match="has no such field"):
        resolve_id_column(SCHEMA, "nope")
    without = AvroSchema.from_dict({"type": "record", "name": "Plain", "fields": [{"name": "k", "type": "string"}]})
    with pytest.raises(ConfigError, match="has no 'event_id' field; name the id column with --id-column"):
        resolve_id_column(without, None)
