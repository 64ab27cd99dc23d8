"""The generated Avro encoder: byte for byte what fastavro writes, and fastavro's errors otherwise.

Every property compares :meth:`RecordEncoder.encode` with
``fastavro.schemaless_writer`` (:meth:`RecordEncoder.fallback`) on the same
record: equal bytes, or the same exception type and message.
"""

from __future__ import annotations

import math
import struct
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from streamml.avro_encoder import RecordEncoder
from streamml.config import DEMO_SCHEMA_PATH
from streamml.serde import AvroSchema

DEMO = AvroSchema.from_file(DEMO_SCHEMA_PATH)
DEMO_ENCODER = RecordEncoder(DEMO.parsed)


def parsed(raw: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(raw)
    assert isinstance(schema, dict)
    return schema


def outcome(encode: Any, record: Any) -> tuple[str, Any]:
    try:
        return "bytes", encode(record)
    except Exception as exc:  # the comparison is of whatever fastavro raises
        return type(exc).__name__, str(exc)


def assert_same_as_fastavro(encoder: RecordEncoder, record: Any) -> None:
    assert outcome(encoder.encode, record) == outcome(encoder.fallback, record)


# Values of every kind, valid or not for a field: numbers at the edges of the one-byte varints and of
# the 32- and 64-bit ranges, NaN and infinities, text with lone surrogates (not UTF-8 encodable), bytes.
INTS = st.one_of(
    st.integers(-70, 70),
    st.integers(-(2**31) - 2, 2**31 + 1),
    st.integers(-(2**63) - 2, 2**63 + 1),
    st.sampled_from([-65, -64, -1, 0, 63, 64, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1,
                     2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**1100]),
)
FLOATS = st.one_of(st.floats(), st.floats(width=32), st.sampled_from([1e39, -1e39, 3.5e38, math.nan, -0.0]))
# Lengths 63 and 64 are where a length prefix takes a second byte.
BOUNDARY_SIZES = st.sampled_from([0, 1, 62, 63, 64, 65, 200])
TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=80),
    st.text(max_size=3),
    st.builds(lambda n, c: c * n, BOUNDARY_SIZES, st.sampled_from(["a", "é"])),
)
BINARY = st.binary(max_size=80) | st.builds(lambda n: b"\x00" * n, BOUNDARY_SIZES)
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), INTS, FLOATS, TEXT, BINARY,
    st.sampled_from(["A", "B", "C", "ZZ"]),  # symbols of the enums below, and one that is not
    st.tuples(st.sampled_from(["int", "string", "null"]), st.integers(0, 3)),  # fastavro's union tuple notation
    st.lists(st.integers(0, 3), max_size=2),
)
TYPED = {
    "null": st.none(), "boolean": st.booleans(), "int": INTS, "long": INTS,
    "float": FLOATS | INTS, "double": FLOATS | INTS, "string": TEXT, "bytes": BINARY,
}


def value_for(avro_type: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a field of this type is given (some out of its range): a branch's, for a union."""
    if isinstance(avro_type, list):
        return st.one_of(*(value_for(branch, named) for branch in avro_type))
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    if isinstance(avro_type, dict):
        if avro_type["type"] == "enum":
            return st.sampled_from([*avro_type["symbols"], "ZZ"])
        avro_type = avro_type["type"]
    return TYPED[avro_type]


@st.composite
def records_of(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """A record of typed values, sometimes with one field left out or given anything, and an extra key."""
    named = schema.get("__named_schemas", {})
    record = {f["name"]: draw(value_for(f["type"], named)) for f in schema["fields"]}
    spoil = draw(st.sampled_from(["none", "none", "missing", "anything"]))
    name = draw(st.sampled_from([f["name"] for f in schema["fields"]]))
    if spoil == "missing":
        del record[name]  # fastavro writes the default, or refuses
    elif spoil == "anything":
        record[name] = draw(ANY_VALUE)
    if draw(st.booleans()):
        record["not_in_schema"] = draw(ANY_VALUE)
    return record


def test_the_demo_schema_gets_a_generated_encoder() -> None:
    assert DEMO_ENCODER.specialized


@hyp_settings(max_examples=600, deadline=None)
@given(record=records_of(DEMO.parsed))
def test_demo_records_encode_as_fastavro_writes_them(record: dict[str, Any]) -> None:
    assert_same_as_fastavro(DEMO_ENCODER, record)


@hyp_settings(max_examples=300, deadline=None)
@given(
    salary=st.one_of(st.none(), st.floats()),
    age=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    event_time=st.integers(-(2**63), 2**63 - 1),
    customer=st.text(),
)
def test_valid_demo_records_take_the_generated_path(
    salary: float | None, age: int | None, event_time: int, customer: str
) -> None:
    record = {
        "event_id": "e1", "customer_id": customer, "event_time": event_time, "salary": salary,
        "commission": 0.0, "age": age, "elevel": 2, "car": 5, "zipcode": 3, "hvalue": -1.5,
        "hyears": 10, "loan": 1e6, "label": None,
    }
    fast = DEMO_ENCODER._fast
    assert fast is not None
    assert fast(record) == DEMO_ENCODER.fallback(record)  # no fallback hides a mismatch here


# Random schemas: records of primitive fields, enums (inline, and named references) and unions of them.
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "string", "bytes"]


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    enum_defined = False
    for index in range(draw(st.integers(1, 6))):
        shape = draw(st.sampled_from(["primitive", "union", "union", "enum", "wrapped"]))
        avro_type: Any
        if shape == "primitive":
            avro_type = draw(st.sampled_from(PRIMITIVES))
        elif shape == "wrapped":
            avro_type = {"type": draw(st.sampled_from(PRIMITIVES))}
        elif shape == "enum" and not enum_defined:
            avro_type = {"type": "enum", "name": "Letter", "symbols": ["A", "B", "C"]}
            enum_defined = True
        else:
            options = [*PRIMITIVES, "Letter"] if enum_defined else PRIMITIVES
            avro_type = draw(st.lists(st.sampled_from(options), min_size=1, max_size=4, unique=True))
        field: dict[str, Any] = {"name": f"f{index}", "type": avro_type}
        first = avro_type[0] if isinstance(avro_type, list) else avro_type
        if first == "null" and draw(st.booleans()):
            field["default"] = None
        fields.append(field)
    return parsed({"type": "record", "name": "Random", "namespace": "test", "fields": fields})


@st.composite
def schema_and_records(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    schema = draw(schemas())
    return schema, [draw(records_of(schema)) for _ in range(5)]


@hyp_settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=schema_and_records())
def test_records_of_random_schemas_encode_as_fastavro_writes_them(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    schema, records = case
    encoder = RecordEncoder(schema)
    assert encoder.specialized
    for record in records:
        assert_same_as_fastavro(encoder, record)


@pytest.mark.parametrize(
    ("avro_type", "values"),
    [
        # fastavro's union rule: the first branch that validates, except that a double beats a float
        (["float", "double"], [1.5, 3, 2**40, 1e300]),
        (["float", "long"], [1.5, 3, 2**70]),
        (["null", "int"], [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 63, 64, -64, -65]),
        (["int", "long", "double"], [3, 2**40, 2**70, 0.5, True]),
        (["long", "int"], [3, 2**63 - 1, 2**63]),
        (["double", "long"], [3, 0.25]),
        (["string", "bytes"], ["x", b"x", None]),
        ({"type": "enum", "name": "E", "symbols": ["A", "B", "A2"]}, ["A", "A2", "C", 1]),
        (["null", {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "string"], ["A", "B", "other", None]),
        (["null", "string", {"type": "enum", "name": "E", "symbols": ["A", "B"]}], ["A", "x"]),
        ("boolean", [True, False, 1, 0, "x", None]),
        ("null", [None, 5]),
        ("int", [2**31, -(2**40), 2**63, True, 1.0, 63, 64, -64, -65]),
        ("float", [1e39, 2.5, 7, "1.5", "nan"]),
        ("double", [2**1100, "1.5", "NaN", True]),
        ("string", ["\ud800", "é" * 70, b"bytes"]),
        ("bytes", [b"x" * 70, bytearray(b"x"), "x"]),
    ],
)
def test_edge_cases_match_fastavro(avro_type: Any, values: list[Any]) -> None:
    encoder = RecordEncoder(parsed({"type": "record", "name": "R", "fields": [
        {"name": "x", "type": avro_type}]}))
    assert encoder.specialized
    for value in values:
        assert_same_as_fastavro(encoder, {"x": value})


def test_a_double_is_written_as_eight_little_endian_bytes_after_the_branch() -> None:
    encoder = RecordEncoder(parsed({"type": "record", "name": "R", "fields": [
        {"name": "x", "type": ["null", "double"]}]}))
    assert encoder.encode({"x": 1.5}) == b"\x02" + struct.pack("<d", 1.5)
    assert encoder.encode({"x": None}) == b"\x00"


@pytest.mark.parametrize(
    "record",
    [MappingProxyType({"event_id": "e", "customer_id": "c", "event_time": 1}), {}, [], None, "text"],
)
def test_records_it_does_not_handle_are_fastavros_to_encode_or_refuse(record: Any) -> None:
    assert_same_as_fastavro(DEMO_ENCODER, record)


@pytest.mark.parametrize(
    "avro_type",
    [
        {"type": "array", "items": "int"},
        {"type": "map", "values": "string"},
        {"type": "fixed", "name": "F", "size": 2},
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]},
        ["null", {"type": "array", "items": "int"}],
    ],
)
def test_other_field_types_leave_the_whole_schema_to_fastavro(avro_type: Any) -> None:
    raw = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}, {"name": "x", "type": avro_type}]}
    encoder = RecordEncoder(parsed(raw))
    assert not encoder.specialized
    for value in ([1, 2], {"k": "v"}, b"ab", 1_700_000_000_000, {"a": 3}, None):
        assert_same_as_fastavro(encoder, {"n": 1, "x": value})
