"""Avro serde: round trips, writer-schema identification, decode failure rules."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from streamml.config import DEMO_SCHEMA_PATH
from streamml.errors import SchemaError, SerializationError
from streamml.records import DEMO_EVENTS_SCHEMA, FEATURE_VECTOR_SCHEMA, MODEL_ENVELOPE_SCHEMA, PREDICTION_SCHEMA
from streamml.serde import SCHEMA_HEADER, AvroSchema, AvroSerde, DecodeError, bundled_schema

SCHEMA = AvroSchema.from_file(DEMO_SCHEMA_PATH)
SERDE = AvroSerde(SCHEMA)


def event(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1", "customer_id": "c0001", "event_time": 1_700_000_000_000,
        "salary": 50_000.0, "commission": 20_000.0, "age": 40, "elevel": 2, "car": 5,
        "zipcode": 3, "hvalue": 300_000.0, "hyears": 10, "loan": 100_000.0, "label": 1,
    }
    base.update(changes)
    return base


def test_fingerprint_is_stable_and_sent_as_header() -> None:
    assert SCHEMA.fingerprint == AvroSchema.from_file(DEMO_SCHEMA_PATH).fingerprint
    assert len(SCHEMA.fingerprint) == 16
    assert (SCHEMA_HEADER, SCHEMA.fingerprint.encode()) in SERDE.headers


def test_contract_is_read_from_the_schema() -> None:
    age = SCHEMA.rule("age")
    assert (age.avro_type, age.nullable, age.required, age.minimum, age.maximum) == ("int", True, True, 18, 100)
    assert SCHEMA.rule("zipcode").allowed == tuple(range(9))
    assert SCHEMA.rule("label").required is False


@pytest.mark.parametrize(
    "changes",
    [{}, {"label": None}, {"salary": None}, {"salary": math.inf}, {"customer_id": "ü-ñ"}, {"age": -5}],
)
def test_round_trip(changes: dict[str, object]) -> None:
    record = event(**changes)
    assert SERDE.decode(SERDE.encode(record), SERDE.headers) == record


@hyp_settings(max_examples=200, deadline=None)
@given(
    salary=st.one_of(st.none(), st.floats(allow_nan=False)),
    age=st.one_of(st.none(), st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    customer=st.text(max_size=30),
    label=st.one_of(st.none(), st.integers(0, 1)),
)
def test_round_trip_property(salary: float | None, age: int | None, customer: str, label: int | None) -> None:
    record = event(salary=salary, age=age, customer_id=customer, label=label)
    assert SERDE.decode(SERDE.encode(record), SERDE.headers) == record


@pytest.mark.parametrize(
    ("value", "headers", "rule"),
    [
        (b"", SERDE.headers, "empty_value"),
        (None, SERDE.headers, "empty_value"),
        (b"\x02e1", [], "missing_schema_header"),
        (b"\x02e1", [(SCHEMA_HEADER, b"0000000000000000")], "unknown_schema"),
        (SERDE.encode(event())[:7], SERDE.headers, "undecodable"),
        (SERDE.encode(event()) + b"\x00\x00", SERDE.headers, "trailing_bytes"),
    ],
)
def test_decode_failures_name_a_rule(value: bytes | None, headers: list, rule: str) -> None:
    with pytest.raises(DecodeError) as info:
        SERDE.decode(value, headers)
    assert info.value.rule == rule


def test_known_writer_schema_is_resolved_to_the_reader() -> None:
    raw = json.loads(DEMO_SCHEMA_PATH.read_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "car"]  # an older producer without 'car'
    older = AvroSchema.from_dict(raw)
    record = event()
    del record["car"]
    value = AvroSerde(older).encode(record)
    decoded = AvroSerde(SCHEMA, writers=[older]).decode(value, AvroSerde(older).headers)
    assert decoded["car"] is None and decoded["age"] == 40


def test_incompatible_writer_schema_is_a_resolution_error() -> None:
    raw = json.loads(DEMO_SCHEMA_PATH.read_text())
    for field in raw["fields"]:
        if field["name"] == "age":
            field["type"] = "string"
            field.pop("default", None)
            field.pop("contract")  # min/max on a string field is itself a schema problem
    wrong = AvroSchema.from_dict(raw)
    value = AvroSerde(wrong).encode(event(age="forty"))
    with pytest.raises(DecodeError) as info:
        AvroSerde(SCHEMA, writers=[wrong]).decode(value, AvroSerde(wrong).headers)
    assert info.value.rule == "schema_resolution"


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"age": "forty"}, "age"), ({"salary": "high"}, "salary"), ({"event_time": None}, "event_time")],
)
def test_encode_error_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SerializationError, match=f"field '{field}'"):
        SERDE.encode(event(**changes))


def test_missing_required_field_is_named() -> None:
    record = event()
    del record["event_id"]
    with pytest.raises(SerializationError, match="field 'event_id': missing"):
        SERDE.encode(record)


@pytest.mark.parametrize(
    "raw",
    [{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}, {"type": "string"}],
)
def test_bad_schemas_are_schema_errors(raw: dict) -> None:
    with pytest.raises(SchemaError):
        AvroSchema.from_dict(raw)


def test_unknown_contract_keys_are_refused() -> None:
    raw = {"type": "record", "name": "X", "fields": [{"name": "a", "type": "int", "contract": {"minimum": 1}}]}
    with pytest.raises(SchemaError, match="unknown contract keys"):
        AvroSchema.from_dict(raw)


def test_missing_schema_file_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(SchemaError, match="not found"):
        AvroSchema.from_file(tmp_path / "nope.avsc")


@pytest.mark.parametrize("name", [FEATURE_VECTOR_SCHEMA, PREDICTION_SCHEMA, MODEL_ENVELOPE_SCHEMA, DEMO_EVENTS_SCHEMA])
def test_bundled_schemas_parse(name: str) -> None:
    assert bundled_schema(name).fingerprint
