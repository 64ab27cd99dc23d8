"""Decoding any pipeline record by topic (what ``streamml tail`` prints), without a broker."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from streamml.config import load_settings
from streamml.envelope import ModelEnvelope, encode_envelope, envelope_headers
from streamml.errors import ConfigError
from streamml.inspection import HEX_PREFIX_BYTES, TopicDecoder, format_line, plain, resolve_topic, text
from streamml.model_control import ControlRecord, control_serde
from streamml.monitoring import MonitoringRecord, encode_record
from streamml.records import DeadLetterReason, FeatureVector, LabelRecord, Prediction, RecordCodec
from streamml.serde import SCHEMA_HEADER, AvroSchema, AvroSerde
from streamml.topic_state import Difference, TopicState, describe_differences, differences
from streamml.topics import Topics, TopicSpec
from streamml.transfer import ModelChunk, chunk_serde

NAMESPACE = "t1."
EVENTS = AvroSchema.from_dict(
    {
        "type": "record", "name": "Ping", "namespace": "test",
        "fields": [{"name": "id", "type": "string"}, {"name": "x", "type": "double"}],
    }
)


@pytest.fixture
def decoder() -> TopicDecoder:
    settings = load_settings(env={}, namespace=NAMESPACE)
    return TopicDecoder(Topics.from_settings(settings), NAMESPACE, EVENTS)


def test_events_features_predictions_and_labels_are_decoded(decoder: TopicDecoder) -> None:
    topics = decoder.topics
    events = AvroSerde(EVENTS)
    assert decoder.decode(topics.raw_events, events.encode({"id": "a", "x": 1.5}), events.headers) == (
        "event", {"id": "a", "x": 1.5},
    )
    vector = FeatureVector("k", "e1", 10, {"x": float("nan")}, True, topics.raw_events, 2, 7)
    codec = RecordCodec(FeatureVector)
    kind, value = decoder.decode(topics.features, codec.encode(vector), codec.headers)
    # NaN becomes text: strict JSON (jq) refuses NaN.
    assert kind == "features" and value["features"] == {"x": "nan"} and value["source_offset"] == 7
    json.loads(json.dumps(value, allow_nan=False))
    prediction = Prediction("k", "e1", 10, "m", 3, "yes", {"yes": 0.9, "no": 0.1}, None, 11)
    pcodec = RecordCodec(Prediction)
    kind, value = decoder.decode(topics.predictions, pcodec.encode(prediction), pcodec.headers)
    assert kind == "prediction" and (value["model_version"], value["prediction"]) == (3, "yes")
    label = LabelRecord("e1", 1, 12)
    lcodec = RecordCodec(LabelRecord)
    assert decoder.decode(topics.labels, lcodec.encode(label), lcodec.headers)[1]["label"] == 1


def test_a_dead_letter_shows_its_reason_and_the_original_event(decoder: TopicDecoder) -> None:
    events = AvroSerde(EVENTS)
    reason = DeadLetterReason(
        stage="validate", rule="below_min", field="x", message="x -1 < 0",
        violations=[{"field": "x", "rule": "below_min", "message": "x -1 < 0"}],
        source_topic=decoder.topics.raw_events, source_partition=1, source_offset=41,
    )
    value = events.encode({"id": "a", "x": -1.0})
    kind, shown = decoder.decode(decoder.topics.dead_letters, value, reason.headers(events.headers))
    assert kind == "dead letter"
    assert shown["reason"]["rule"] == "below_min" and shown["reason"]["source.offset"] == 41
    assert shown["reason"]["violations"][0]["field"] == "x"
    assert shown["original"] == {"id": "a", "x": -1.0}
    # A dead letter quarantined because it did not decode still shows its reason.
    kind, shown = decoder.decode(decoder.topics.dead_letters, b"\x01junk", reason.headers([]))
    assert kind == "dead letter" and shown["reason"]["stage"] == "validate"
    assert shown["original"]["undecodable"]["length"] == 5


class _RunsCode:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.sentinel}",)


def test_model_records_show_metadata_and_never_load_a_payload(decoder: TopicDecoder, tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    payload = pickle.dumps(_RunsCode(sentinel))
    envelope = ModelEnvelope(
        model_name="m", version=2, created_at=1, format="pickle", flavor="river", model_class="a.B",
        metrics={"accuracy": 0.75}, n_learned=5, input_offsets={}, runtime={}, payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(), payload_size=len(payload),
    )
    models = decoder.topics.models
    kind, meta = decoder.decode(models, encode_envelope(envelope), envelope_headers())
    assert kind == "model envelope"
    assert (meta["model_name"], meta["version"], meta["payload_bytes"], meta["metrics"]) == (
        "m", 2, len(payload), {"accuracy": 0.75},
    )
    assert "payload" not in meta and payload.hex() not in json.dumps(meta)
    chunk = ModelChunk("m", 2, "t-1", 0, 3, payload)
    kind, shown = decoder.decode(models, chunk.encode(), chunk_serde().headers)
    assert kind == "model chunk"
    assert (shown["index"], shown["count"], shown["data_bytes"]) == (0, 3, len(payload))
    assert shown["data_sha256"] == hashlib.sha256(payload).hexdigest() and "data" not in shown
    directive = ControlRecord("m", "pin", 2, 1, issued_at=5, reason="rollback drill")
    kind, shown = decoder.decode(models, directive.encode(), control_serde().headers)
    assert kind == "model directive"
    assert (shown["action"], shown["version"], shown["signed"]) == ("pin", 2, False)
    # The pickle alone, with or without an envelope header: undecodable, never loaded.
    for headers in ([], envelope_headers()):
        kind, shown = decoder.decode(models, payload, headers)
        assert kind == "undecodable" and shown["length"] == len(payload)
    assert not sentinel.exists()


def test_monitoring_and_replay_ledger(decoder: TopicDecoder) -> None:
    record = MonitoringRecord(kind="profile", stream="test.Ping", source="s", created_at=3, fields={"x": {"n": 2}})
    _, value = encode_record(record)
    kind, shown = decoder.decode(decoder.topics.monitoring, value, [])
    assert kind == "monitoring" and shown["kind"] == "profile" and shown["fields"] == {"x": {"n": 2}}
    assert decoder.decode(decoder.topics.replayed, None, []) == ("replay", None)


@pytest.mark.parametrize(
    ("value", "headers"),
    [
        (b"\xff\xfe\x00 not avro", "events"),  # right schema header, corrupt bytes
        (b"", "events"),  # empty value
        (None, "events"),  # tombstone
        (b"\x02a\x00", []),  # no schema header
        (b"\x02a", [(SCHEMA_HEADER, b"0123456789abcdef")]),  # unknown writer schema
        (bytes(range(256)), "events"),  # long garbage: only a hex prefix is shown
    ],
)
def test_an_undecodable_record_is_shown_with_its_bytes_and_error(
    decoder: TopicDecoder, value: bytes | None, headers: Any
) -> None:
    real = AvroSerde(EVENTS).headers if headers == "events" else headers
    kind, shown = decoder.decode(decoder.topics.raw_events, value, real)
    assert kind == "undecodable"
    assert shown["length"] == len(value or b"")
    assert shown["hex"] == (value or b"")[:HEX_PREFIX_BYTES].hex()
    assert shown["error"]


def test_monitoring_garbage_and_bad_dead_letter_headers_do_not_raise(decoder: TopicDecoder) -> None:
    assert decoder.decode(decoder.topics.monitoring, b"{not json", [])[0] == "undecodable"
    bad = [("streamml.dlq.violations", b"[not json"), ("streamml.dlq.rule", b"x")]
    kind, shown = decoder.decode(decoder.topics.dead_letters, b"", bad)
    assert kind == "dead letter" and "unreadable reason headers" in shown["reason"]["error"]


def test_resolve_takes_short_or_namespaced_names_and_suggests_close_ones(decoder: TopicDecoder) -> None:
    assert resolve_topic(decoder.topics, NAMESPACE, "events.raw.v1") == NAMESPACE + "events.raw.v1"
    assert decoder.resolve(NAMESPACE + "models.v1") == NAMESPACE + "models.v1"
    with pytest.raises(ConfigError, match=r"did you mean features\.v1\?"):
        decoder.resolve("featurs.v1")
    with pytest.raises(ConfigError, match="not a pipeline topic"):
        decoder.resolve("zzz")


def test_describe_and_format_line(decoder: TopicDecoder) -> None:
    events = AvroSerde(EVENTS)
    record = decoder.describe(
        decoder.topics.raw_events, 1, 9, 1_700_000_000_000, b"\xffkey", events.encode({"id": "a", "x": 2.0}),
        events.headers,
    )
    assert (record["partition"], record["offset"], record["key"], record["kind"]) == (1, 9, "0xff6b6579", "event")
    assert dict(record["headers"])[SCHEMA_HEADER] == EVENTS.fingerprint
    line = format_line(record)
    assert line.startswith(f"{decoder.topics.raw_events}[1]@9 2023-11-14T22:13:20.000+00:00 key=0xff6b6579 event: ")
    assert '{"id":"a","x":2.0}' in line and "\n" not in line
    assert plain({"b": b"\x01", "t": (1, float("inf"))}) == {"b": "01", "t": [1, "inf"]}
    assert text(None) is None and text(b"ok") == "ok"


def test_topic_state_differences() -> None:
    spec = TopicSpec("t.dlq", 1, {"retention.ms": "100", "cleanup.policy": "delete"})
    same = TopicState("t.dlq", 1, {"retention.ms": "100", "cleanup.policy": "delete", "x": "y"})
    assert differences(spec, same) == []  # a config the spec does not set is not compared
    found = differences(spec, TopicState("t.dlq", 4, {"cleanup.policy": "compact"}))
    assert found == [
        Difference("partitions", "1", "4"), Difference("retention.ms", "100", None),
        Difference("cleanup.policy", "delete", "compact"),
    ]
    assert describe_differences("t.dlq", found) == (
        "topic t.dlq differs from its spec: partitions 4 (expected 1); retention.ms unset (expected 100); "
        "cleanup.policy compact (expected delete)"
    )
