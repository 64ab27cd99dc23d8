"""Decode any record of a pipeline topic for a person to read: what ``streamml tail`` prints.

kcat cannot decode the pipeline's records: their Avro writer schema travels as
a fingerprint header (:mod:`streamml.serde`). :class:`TopicDecoder` knows, per
topic, which codec wrote it and turns one record into a JSON-ready dict:
partition, offset, timestamp, key, ``kind``, decoded value and headers.

- events, features, predictions, labels: the record's fields;
- dead letters: the reason headers (:class:`~streamml.records.DeadLetterReason`)
  and the original event, decoded when it still can be;
- monitoring: the JSON record (:mod:`streamml.monitoring`);
- models: envelope metadata (name, version, key id, payload size and sha256,
  metrics), chunk and directive fields. A payload is never shown and never
  deserialized: a pickle on the models topic can run code.

A record that does not decode is ``kind="undecodable"`` with its length, a hex
prefix and the decode error: decoding never raises for a record's content.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from streamml.config import Settings
from streamml.envelope import decode_envelope, envelope_serde
from streamml.errors import ConfigError, StreamMLError
from streamml.model_control import ControlRecord, control_serde
from streamml.monitoring import decode_record
from streamml.records import DLQ_PREFIX, DeadLetterReason, FeatureVector, LabelRecord, Prediction, RecordCodec
from streamml.serde import SCHEMA_HEADER, AvroSchema, AvroSerde, Headers, header_value
from streamml.topics import Topics
from streamml.transfer import ModelChunk, chunk_serde

__all__ = ["HEX_PREFIX_BYTES", "TopicDecoder", "format_line", "plain", "resolve_topic", "text"]

#: Bytes of an undecodable value shown in hex.
HEX_PREFIX_BYTES = 32


def plain(value: Any) -> Any:
    """``value`` as strict JSON can hold it: bytes as hex, times as ISO text, NaN and infinities as text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": strict JSON parsers (jq) refuse NaN
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # Decimal, UUID: fastavro logical types


def text(raw: bytes | None) -> str | None:
    """A key or header value as text: UTF-8 when it is, else ``0x`` and hex."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def resolve_topic(topics: Topics, namespace: str, name: str) -> str:
    """The namespaced name of pipeline topic ``name``, short (``events.raw.v1``) or namespaced.

    Raises :class:`ConfigError` (exit 2) with a "did you mean" for a name that is neither.
    """
    known = topics.all()
    for candidate in (name, namespace + name):
        if candidate in known:
            return candidate
    short = [t[len(namespace):] for t in known]
    close = difflib.get_close_matches(name, short + known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"{name!r} is not a pipeline topic{hint}; the topics are: {', '.join(short)}")


def _undecodable(value: bytes | None, error: str) -> dict[str, Any]:
    raw = value or b""
    return {"length": len(raw), "hex": raw[:HEX_PREFIX_BYTES].hex(), "error": error}


class TopicDecoder:
    """Decode the records of one pipeline's topics (one namespace, one event schema).

    ``resolve`` turns a short (``events.raw.v1``) or namespaced topic name
    into the namespaced one; ``describe`` turns one record into a dict.
    """

    def __init__(self, topics: Topics, namespace: str, events: AvroSchema) -> None:
        self.topics = topics
        self.namespace = namespace
        events_serde = AvroSerde(events)
        feature_serde = RecordCodec(FeatureVector).serde
        self._serdes: dict[str, tuple[str, AvroSerde]] = {
            topics.raw_events: ("event", events_serde),
            topics.features: ("features", feature_serde),
            topics.features_by_event: ("features", feature_serde),
            topics.features_labelled: ("features", feature_serde),
            topics.predictions: ("prediction", RecordCodec(Prediction).serde),
            topics.labels: ("label", RecordCodec(LabelRecord).serde),
        }
        self._events = events_serde
        self._model_kinds = {
            envelope_serde().reader.fingerprint.encode(): "model envelope",
            chunk_serde().reader.fingerprint.encode(): "model chunk",
            control_serde().reader.fingerprint.encode(): "model directive",
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicDecoder:
        """The decoder of ``settings``' pipeline; raises :class:`SchemaError` for a bad event schema."""
        return cls(Topics.from_settings(settings), settings.namespace, AvroSchema.from_file(settings.schema_path))

    def resolve(self, name: str) -> str:
        """The namespaced name of pipeline topic ``name`` (see :func:`resolve_topic`)."""
        return resolve_topic(self.topics, self.namespace, name)

    def decode(self, topic: str, value: bytes | None, headers: Headers) -> tuple[str, Any]:
        """Return ``(kind, JSON-ready value)`` of one record of ``topic``; never raises for its content."""
        try:
            return self._decode(topic, value, headers)
        # Content errors (StreamMLError) and anything else a corrupt value makes a codec
        # or record class raise (EOFError, IndexError, struct.error...): a tail shows
        # the record and the error, it never stops at one.
        except Exception as exc:
            return "undecodable", _undecodable(value, f"{type(exc).__name__}: {exc}")

    def _decode(self, topic: str, value: bytes | None, headers: Headers) -> tuple[str, Any]:
        if topic in self._serdes:
            kind, serde = self._serdes[topic]
            return kind, plain(serde.decode(value, headers))
        if topic == self.topics.dead_letters:
            return "dead letter", self._dead_letter(value, headers)
        if topic == self.topics.replayed:
            # The ledger's key is the replayed dead letter's position; the value is empty.
            return "replay", None
        if topic == self.topics.monitoring:
            return "monitoring", plain(decode_record(value).as_dict())
        if topic == self.topics.models:
            return self._model_record(value, headers)
        raise ConfigError(f"{topic!r} is not a topic of this pipeline")

    def _dead_letter(self, value: bytes | None, headers: Headers) -> dict[str, Any]:
        try:
            reason: Any = DeadLetterReason.read(headers)
        except ValueError as exc:  # a violations header that is not JSON
            reason = {"error": f"unreadable reason headers: {exc}"}
        # The original event's own headers come first; the reason headers are not its.
        original = [(k, v) for k, v in headers or () if not k.startswith(DLQ_PREFIX)]
        try:
            event: Any = plain(self._events.decode(value, original))
        except StreamMLError as exc:
            event = {"undecodable": _undecodable(value, str(exc))}
        return {"reason": plain(reason), "original": event}

    def _model_record(self, value: bytes | None, headers: Headers) -> tuple[str, Any]:
        # Told apart by schema header, like streamml.models_topic. Only Avro is
        # decoded here: the payload bytes are measured, never deserialized.
        kind = self._model_kinds.get(header_value(headers, SCHEMA_HEADER) or b"", "model envelope")
        if kind == "model chunk":
            chunk = ModelChunk.decode(value, headers)
            return kind, {
                "model_name": chunk.model_name, "version": chunk.version, "transfer_id": chunk.transfer_id,
                "index": chunk.index, "count": chunk.count, "data_bytes": len(chunk.data),
                "data_sha256": hashlib.sha256(chunk.data).hexdigest(),
            }
        if kind == "model directive":
            record = ControlRecord.decode(value, headers)
            fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "signature"}
            return kind, plain({**fields, "signed": record.signature is not None})
        summary = decode_envelope(value, headers).summary()
        return kind, plain(summary)

    def describe(
        self, topic: str, partition: int, offset: int, timestamp: int | None,
        key: bytes | None, value: bytes | None, headers: Headers,
    ) -> dict[str, Any]:
        """One record as a JSON-ready dict: where it is, when, its key, kind, decoded value and headers."""
        kind, decoded = self.decode(topic, value, headers)
        return {
            "topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp,
            "key": text(key), "kind": kind, "value": decoded,
            "headers": [[k, text(v)] for k, v in headers or ()],
        }


def format_line(record: Mapping[str, Any]) -> str:
    """One record (from :meth:`TopicDecoder.describe`) as one line, like kcat's ``topic[p]@offset``."""
    ts = record.get("timestamp")
    when = (
        datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).isoformat(timespec="milliseconds")
        if isinstance(ts, int) and ts >= 0 else "-"
    )
    value = json.dumps(record["value"], separators=(",", ":"), ensure_ascii=False)
    headers = ",".join(f"{k}={v}" for k, v in record["headers"])
    return (
        f"{record['topic']}[{record['partition']}]@{record['offset']} {when} key={record['key']} "
        f"{record['kind']}: {value} headers={headers or '-'}"
    )
