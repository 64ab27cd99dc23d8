"""The synthetic source: determinism, the drift, and each kind of injected fault."""

from __future__ import annotations

import math
from typing import Any

import pytest

from producers import FAULT_KINDS, RawPayload, SyntheticSource
from streamml.errors import SourceError
from streamml.records import DEMO_EVENTS_SCHEMA
from streamml.serde import AvroSchema, AvroSerde, DecodeError, bundled_schema

FIXED_CLOCK = lambda: 1_700_000_000.0  # noqa: E731 - event_time is the only wall-clock field
AGRAWAL_INTS = ("age", "elevel", "car", "zipcode", "hyears")
AGRAWAL_FLOATS = ("salary", "commission", "hvalue", "loan")


# The two concepts, written from the Agrawal et al. definitions (not read from
# river), so the test checks what the stream really does.
def concept_9(r: dict[str, Any]) -> int:
    equity = r["hvalue"] * (r["hyears"] - 20) / 10 if r["hyears"] >= 20 else 0
    disposable = 2 * (r["salary"] + r["commission"]) / 3 - 5000 * r["elevel"] + equity / 5 - 10000
    return 0 if disposable > 1 else 1


def concept_6(r: dict[str, Any]) -> int:
    disposable = 2 * (r["salary"] + r["commission"]) / 3 - r["loan"] / 5 - 20000
    return 0 if disposable > 1 else 1


def test_same_seed_same_events_and_different_seed_different_events() -> None:
    first = list(SyntheticSource(300, seed=7, bad_fraction=0.1, clock=FIXED_CLOCK))
    again = list(SyntheticSource(300, seed=7, bad_fraction=0.1, clock=FIXED_CLOCK))
    other = list(SyntheticSource(300, seed=8, bad_fraction=0.1, clock=FIXED_CLOCK))
    assert first == again
    assert first != other


def test_iterating_again_restarts_from_the_seed() -> None:
    source = SyntheticSource(50, seed=3, clock=FIXED_CLOCK)
    assert list(source) == list(source)


def test_faults_do_not_change_the_clean_events() -> None:
    clean = list(SyntheticSource(500, seed=5, clock=FIXED_CLOCK))
    mixed = list(SyntheticSource(500, seed=5, bad_fraction=0.2, clock=FIXED_CLOCK))
    unchanged = sum(a == b for a, b in zip(clean, mixed, strict=True))
    assert 300 < unchanged < 500


def test_events_have_the_schema_types_and_encode() -> None:
    source = SyntheticSource(200, seed=1)
    serde = AvroSerde(source.schema)
    events = list(source)
    assert len(events) == 200
    for event in events:
        assert isinstance(event, dict)
        assert all(type(event[f]) is int for f in AGRAWAL_INTS)
        assert all(type(event[f]) is float for f in AGRAWAL_FLOATS)
        assert event["label"] in (0, 1)
        assert type(event["event_time"]) is int and event["event_time"] > 1_600_000_000_000
        assert serde.decode(serde.encode(event), serde.headers) == event
    assert len({e["event_id"] for e in events}) == 200


def test_customer_ids_repeat_within_the_configured_range() -> None:
    events = list(SyntheticSource(2000, seed=2, customers=100))
    ids = [e["customer_id"] for e in events]
    assert set(ids) <= {f"c{i:04d}" for i in range(100)}
    assert len(set(ids)) < len(ids)


def test_labels_follow_concept_9_then_concept_6_around_half_the_length() -> None:
    events = list(SyntheticSource(4000, seed=11))
    early, late = events[:1500], events[2500:]
    assert all(e["label"] == concept_9(e) for e in early)
    assert all(e["label"] == concept_6(e) for e in late)
    # The concepts really disagree, so the check above is not a coincidence.
    disagree = sum(concept_9(e) != concept_6(e) for e in late) / len(late)
    assert disagree > 0.2


def test_bad_fraction_injects_every_kind_about_as_often_as_asked() -> None:
    source = SyntheticSource(5000, seed=4, bad_fraction=0.1, clock=FIXED_CLOCK)
    events = list(source)
    assert set(source.injected) == set(FAULT_KINDS)
    assert 400 < sum(source.injected.values()) < 600
    records = [e for e in events if not isinstance(e, RawPayload)]
    raws = [e for e in events if isinstance(e, RawPayload)]

    assert any(isinstance(r[f], float) and math.isnan(r[f]) for r in records for f in AGRAWAL_FLOATS)
    assert any(r["age"] == -5 for r in records)
    assert any(r["zipcode"] == 42 for r in records)
    nulls = sum(r[f] is None for r in records for f in (*AGRAWAL_INTS, *AGRAWAL_FLOATS))
    assert nulls == source.injected["missing_required"]

    assert len(raws) == source.injected["corrupt_bytes"]
    serde = AvroSerde(source.schema)
    for raw in raws:
        assert raw.fault == "corrupt_bytes" and raw.key and raw.key.startswith("c")
        with pytest.raises(DecodeError):
            serde.decode(raw.value, serde.headers)


def test_no_faults_by_default() -> None:
    source = SyntheticSource(1000, seed=4)
    assert not any(isinstance(e, RawPayload) for e in source)
    assert source.injected == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 0}, "length must be at least 1"),
        ({"bad_fraction": 1.5}, "bad_fraction must be between 0 and 1"),
        ({"customers": 0}, "customers must be between"),
    ],
)
def test_invalid_arguments_are_source_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        SyntheticSource(**kwargs)


def test_a_schema_without_the_demo_fields_is_refused() -> None:
    raw = {"type": "record", "name": "Other", "fields": [{"name": "event_id", "type": "string"}]}
    with pytest.raises(SourceError, match="schema Other lacks customer_id"):
        SyntheticSource(10, schema=AvroSchema.from_dict(raw))


def test_the_bundled_schema_is_the_default() -> None:
    assert SyntheticSource(1).schema.fingerprint == bundled_schema(DEMO_EVENTS_SCHEMA).fingerprint
