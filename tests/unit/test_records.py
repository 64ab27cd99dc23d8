"""The records between stages: each dataclass is exactly its Avro schema, and round-trips."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from streamml.records import (
    DEAD_LETTER_STAGES,
    DLQ_PREFIX,
    DeadLetterReason,
    FeatureVector,
    Prediction,
    RecordCodec,
)
from streamml.serde import bundled_schema
from streamml.topics import FEATURES, PREDICTIONS

_AVRO_TO_PYTHON = {"string": str, "long": int, "int": int, "double": float, "boolean": bool, "null": type(None)}


def _python_types(avro_type: object) -> set[object]:
    if isinstance(avro_type, list):
        return set().union(*(_python_types(t) for t in avro_type))
    if isinstance(avro_type, dict):
        return {dict} if avro_type["type"] == "map" else {avro_type["type"]}
    return {_AVRO_TO_PYTHON[str(avro_type)]}


def _annotation_types(annotation: object) -> set[object]:
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is dict:
        return {dict}
    if args:
        return set().union(*(_annotation_types(a) for a in args))
    return {annotation}


@pytest.mark.parametrize("record_type", [FeatureVector, Prediction])
def test_record_fields_are_the_schema_fields_with_matching_types(record_type: type) -> None:
    schema = bundled_schema(record_type.SCHEMA).parsed
    hints = typing.get_type_hints(record_type)
    fields = [f.name for f in dataclasses.fields(record_type)]
    assert fields == [f["name"] for f in schema["fields"]]
    for avro_field in schema["fields"]:
        assert _annotation_types(hints[avro_field["name"]]) == _python_types(avro_field["type"]), avro_field["name"]


def test_records_are_tied_to_their_topics() -> None:
    assert (FeatureVector.TOPIC, Prediction.TOPIC) == (FEATURES, PREDICTIONS)


def test_feature_vector_round_trips() -> None:
    codec = RecordCodec(FeatureVector)
    vector = FeatureVector("k", "e1", 1_700_000_000_000, {"age": 35.0}, 1, "events.raw.v1", 2, 41)
    assert codec.decode(codec.encode(vector), codec.headers) == vector


def test_prediction_round_trips() -> None:
    codec = RecordCodec(Prediction)
    record = Prediction(None, "e1", 1, "m", 7, True, {"True": 0.9, "False": 0.1}, None, 2)
    assert codec.decode(codec.encode(record), codec.headers) == record


def test_dead_letter_reason_written_and_read_in_one_place() -> None:
    reason = DeadLetterReason(
        stage="validate", rule="above_max", field="age", message="age=140 is above 100",
        violations=[{"field": "age", "rule": "above_max", "message": "age=140 is above 100"}],
        source_topic="events.raw.v1", source_partition=1, source_offset=99, source_timestamp=None, timestamp=5,
    )
    headers = reason.headers([("trace", b"x")])
    assert headers[0] == ("trace", b"x")
    assert [name for name, _ in headers[1:]] == [DLQ_PREFIX + n for n in DeadLetterReason.HEADER_NAMES]
    read = DeadLetterReason.read(headers)
    assert read["violations"] == reason.violations
    assert (read["source.partition"], read["source.offset"], read["source.timestamp"]) == (1, 99, "")
    assert DeadLetterReason.rule_of(headers) == "above_max"
    assert reason.stage in DEAD_LETTER_STAGES
