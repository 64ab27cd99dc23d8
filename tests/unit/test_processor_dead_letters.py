"""Dead-letter reason headers."""

from __future__ import annotations

import json

import pytest

from stream_processors.dead_letters import DLQ_PREFIX, Rejection, dead_letter_headers, read_rejection
from streamml.validation import Violation

ORIGINAL = [("streamml.schema", b"abc"), ("trace", None), ("trace", b"2")]


def headers_for(rejection: Rejection) -> list[tuple[str, bytes | None]]:
    return dead_letter_headers(
        ORIGINAL, rejection, topic="raw", partition=2, offset=41, source_timestamp_ms=1000, now_ms=5000
    )


def test_original_headers_come_first_unchanged() -> None:
    headers = headers_for(Rejection("decode", "undecodable", "", "bad bytes"))
    assert headers[: len(ORIGINAL)] == ORIGINAL
    assert all(name.startswith(DLQ_PREFIX) for name, _ in headers[len(ORIGINAL):])


def test_decode_rejection_headers() -> None:
    headers = dict(headers_for(Rejection("decode", "unknown_schema", "", "unknown writer schema 'x'"))[3:])
    assert headers == {
        "streamml.dlq.stage": b"decode",
        "streamml.dlq.rule": b"unknown_schema",
        "streamml.dlq.field": b"",
        "streamml.dlq.message": b"unknown writer schema 'x'",
        "streamml.dlq.violations": b'[{"field":"","rule":"unknown_schema","message":"unknown writer schema \'x\'"}]',
        "streamml.dlq.source.topic": b"raw",
        "streamml.dlq.source.partition": b"2",
        "streamml.dlq.source.offset": b"41",
        "streamml.dlq.source.timestamp": b"1000",
        "streamml.dlq.timestamp": b"5000",
        # Empty unless the record was too large to keep whole.
        "streamml.dlq.original.size": b"",
        "streamml.dlq.original.sha256": b"",
    }


def test_validation_rejection_names_the_first_and_lists_all() -> None:
    violations = [Violation("age", "below_min", "age=5 is below 18"), Violation("salary", "required", "missing")]
    reason = read_rejection(headers_for(Rejection.from_violations(violations)))
    assert (reason["stage"], reason["rule"], reason["field"]) == ("validate", "below_min", "age")
    assert reason["violations"] == [v.as_dict() for v in violations]
    assert reason["message"] == "age=5 is below 18; missing"
    assert (reason["source.topic"], reason["source.partition"], reason["source.offset"]) == ("raw", 2, 41)


def test_no_source_timestamp_is_an_empty_header() -> None:
    headers = dead_letter_headers(None, Rejection("featurize", "featurize_error", "", "boom"), topic="t",
                                  partition=0, offset=0, source_timestamp_ms=None, now_ms=1)
    assert read_rejection(headers)["source.timestamp"] == ""


def test_a_second_quarantine_reads_as_the_newest_reason() -> None:
    first = headers_for(Rejection("decode", "undecodable", "", "x"))
    second = dead_letter_headers(first, Rejection("validate", "required", "age", "y"), topic="raw",
                                 partition=0, offset=1, source_timestamp_ms=None, now_ms=6000)
    assert read_rejection(second)["rule"] == "required"


def test_non_ascii_messages_are_utf8() -> None:
    reason = read_rejection(headers_for(Rejection("validate", "not_allowed", "city", "city='Zürich' not allowed")))
    assert reason["message"] == "city='Zürich' not allowed"
    assert json.loads(json.dumps(reason["violations"]))[0]["message"] == "city='Zürich' not allowed"


@pytest.mark.parametrize("stage", ["parse", "", "Decode"])
def test_unknown_stage_is_refused(stage: str) -> None:
    with pytest.raises(ValueError, match="stage"):
        Rejection(stage, "x", "", "m")


def test_validation_rejection_needs_a_violation() -> None:
    with pytest.raises(ValueError):
        Rejection.from_violations([])
