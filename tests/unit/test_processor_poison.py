"""Poison pills found on the raw topic: none of them can stop or poison the processor (no broker)."""

from __future__ import annotations

import hashlib
import io

import fastavro
import pytest

from stream_processors.batches import SourceRecord
from stream_processors.dead_letters import read_rejection
from stream_processors.pipeline import BatchProcessor
from streamml.config import Settings
from streamml.errors import DecodeError
from streamml.records import FEATURE_VECTOR_SCHEMA, DeadLetterReason
from streamml.serde import AvroSchema, AvroSerde, bundled_schema

SETTINGS = Settings(partitions=3)
SERDE = AvroSerde(AvroSchema.from_file(SETTINGS.schema_path))
FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))
NOW = 1_800_000_000.0  # the processor's clock in these tests, seconds
T0 = int(NOW * 1000) - 3_600_000  # events from an hour ago
PROCESSOR = BatchProcessor.from_settings(SETTINGS)
PROCESSOR._clock = lambda: NOW  # a fixed clock: event-time bounds are relative to it


def event(i: int, customer: str = "alice", **overrides: object) -> dict:
    base = {"event_id": f"e{i}", "customer_id": customer, "event_time": T0 + i * 1000, "salary": 50000.0,
            "commission": 0.0, "age": 30, "elevel": 1, "car": 2, "zipcode": 3, "hvalue": 1e5, "hyears": 4,
            "loan": 100.0 * (i + 1), "label": None}
    return {**base, **overrides}


def record(value: bytes | None, *, key: bytes | None = b"alice", offset: int = 0,
           headers: tuple[tuple[str, bytes | None], ...] | None = None) -> SourceRecord:
    return SourceRecord(value, key, tuple(SERDE.headers) if headers is None else headers, "raw", 0, offset, 1234)


def key_events(out: object) -> float:
    return float(FEATURES.decode(out.value, out.headers)["features"]["key_events_60s"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("size", [1_010_000, 1_020_000, 5_000_000])
def test_a_record_too_large_to_dead_letter_whole_is_quarantined_truncated(size: int) -> None:
    value = b"\xff" * size  # undecodable, and larger than one produce request
    big = record(value, headers=(*SERDE.headers, ("trace", b"x" * 2000)))
    result = PROCESSOR.process_batch([big, record(SERDE.encode(event(1)), offset=1)])
    [dead] = result.dead_letters
    assert len(result.features) == 1  # the event behind it is processed
    reason = read_rejection(dead.headers)
    assert reason["rule"] == "undecodable" and reason["source.offset"] == 0
    assert reason["original.size"] >= size and reason["original.sha256"] == hashlib.sha256(value).hexdigest()
    total = len(dead.value or b"") + sum(len(n) + len(v or b"") for n, v in dead.headers)
    assert total <= SETTINGS.dead_letter_max_bytes
    assert dead.value == value[: len(dead.value or b"")]  # a true prefix of the original


def test_a_small_dead_letter_keeps_the_whole_record_and_no_truncation_marks() -> None:
    [dead] = PROCESSOR.process_batch([record(b"\xff" * 64)]).dead_letters
    assert dead.value == b"\xff" * 64
    reason = read_rejection(dead.headers)
    assert reason["original.size"] == "" and reason["original.sha256"] == ""


def test_a_huge_offending_value_in_a_reason_is_cut_so_the_dead_letter_fits() -> None:
    # An allowed-list violation quotes the value: a 2 MB customer id would make megabyte headers.
    huge = SERDE.encode(event(0, customer="c" * 2_000_000, zipcode=42))
    [dead] = PROCESSOR.process_batch([record(huge)]).dead_letters
    reason_bytes = sum(len(n) + len(v or b"") for n, v in dead.headers if n.startswith("streamml.dlq."))
    assert reason_bytes < 64 * 1024
    assert read_rejection(dead.headers)["rule"] == "not_allowed"


def test_a_far_future_event_is_quarantined_and_does_not_poison_its_key() -> None:
    year_3000 = 32_503_680_000_000
    batch = [record(SERDE.encode(event(0, event_time=year_3000)), offset=0)]
    batch += [record(SERDE.encode(event(i)), offset=i) for i in range(1, 6)]
    control = [record(SERDE.encode(event(i, "bob")), key=b"bob", offset=10 + i) for i in range(1, 6)]
    result = PROCESSOR.process_batch(batch + control)
    [dead] = result.dead_letters
    reason = read_rejection(dead.headers)
    assert (reason["stage"], reason["rule"], reason["field"]) == ("validate", "event_time_future", "event_time")
    alice = [key_events(o) for o in result.features if o.key == b"alice"]
    bob = [key_events(o) for o in result.features if o.key == b"bob"]
    assert alice == bob == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_an_event_a_little_ahead_of_the_clock_is_accepted() -> None:
    soon = int(NOW * 1000) + 30_000  # within the 60 s allowed for clock skew
    assert len(PROCESSOR.process_batch([record(SERDE.encode(event(0, event_time=soon)))]).features) == 1


@pytest.mark.parametrize("event_time", [0, 1_700_000_000])  # epoch 0; seconds sent as milliseconds
def test_an_implausibly_old_event_is_quarantined(event_time: int) -> None:
    [dead] = PROCESSOR.process_batch([record(SERDE.encode(event(0, event_time=event_time)))]).dead_letters
    assert read_rejection(dead.headers)["rule"] == "event_time_past"


def test_a_negative_union_branch_index_is_quarantined_not_decoded() -> None:
    valid = SERDE.encode(event(0))
    assert valid.endswith(b"\x00")  # the label union, branch 0 (null)
    # Branch index -1 (zigzag 0x01) followed by an int: fastavro alone reads it as the last branch.
    forged = valid[:-1] + b"\x01\x02"
    assert fastavro.schemaless_reader(io.BytesIO(forged), SERDE.reader.parsed, None)["label"] == 1
    with pytest.raises(DecodeError) as raised:
        SERDE.decode(forged, SERDE.headers)
    assert raised.value.rule == "non_canonical"
    [dead] = PROCESSOR.process_batch([record(forged)]).dead_letters
    assert read_rejection(dead.headers)["rule"] == "non_canonical"


def test_reason_headers_round_trip_the_truncation_marks() -> None:
    reason = DeadLetterReason("decode", "undecodable", "", "x", original_size=5_000_000, original_sha256="ab" * 32)
    read = DeadLetterReason.read(reason.headers())
    assert (read["original.size"], read["original.sha256"]) == (5_000_000, "ab" * 32)
