"""The records that flow between stages, each tied to its topic and its Avro schema.

One module owns the wire contracts the components share, so none of them
builds or reads another's records by string keys:

=====================  ======================  ==========================
record                 topic                   schema
=====================  ======================  ==========================
raw event (yours)      ``events.raw.v1``       ``STREAMML_SCHEMA_PATH``
                                               (demo: ``events_demo.avsc``)
dead letter            ``events.raw.v1.dlq``   the original bytes, plus
                                               :class:`DeadLetterReason`
                                               headers
:class:`FeatureVector` ``features.v1``         ``feature_vector.avsc``
model envelope         ``models.v1``           ``model_envelope.avsc``
                                               (:mod:`streamml.envelope`)
model chunk            ``models.v1``           ``model_chunk.avsc``
                                               (:mod:`streamml.transfer`)
serving directive      ``models.v1``           ``model_control.avsc``
                                               (:mod:`streamml.model_control`)
:class:`Prediction`    ``predictions.v1``      ``prediction.avsc``
:class:`LabelRecord`   ``labels.v1``           ``label.avsc``
:class:`FeatureVector` ``features.by-event.v1``,  ``feature_vector.avsc``
                       ``features.labelled.v1``   (delayed labels)
=====================  ======================  ==========================

No schema file name is written anywhere else; a unit test checks that the
dataclass fields are the schema's fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from streamml.serde import AvroSerde, Headers, bundled_schema, header_value
from streamml.topics import DEAD_LETTERS, FEATURES, LABELS, PREDICTIONS

__all__ = [
    "SCHEMAS_DIR",
    "DEMO_EVENTS_SCHEMA",
    "DEMO_EVENTS_SCHEMA_PATH",
    "FEATURE_VECTOR_SCHEMA",
    "PREDICTION_SCHEMA",
    "MODEL_ENVELOPE_SCHEMA",
    "MODEL_CHUNK_SCHEMA",
    "MODEL_CONTROL_SCHEMA",
    "LABEL_SCHEMA",
    "LabelRecord",
    "avro_label",
    "Label",
    "FeatureVector",
    "Prediction",
    "RecordCodec",
    "DLQ_PREFIX",
    "DEAD_LETTER_STAGES",
    "DeadLetterReason",
]

SCHEMAS_DIR = Path(__file__).parent / "schemas"
DEMO_EVENTS_SCHEMA = "events_demo.avsc"
DEMO_EVENTS_SCHEMA_PATH = SCHEMAS_DIR / DEMO_EVENTS_SCHEMA
FEATURE_VECTOR_SCHEMA = "feature_vector.avsc"
PREDICTION_SCHEMA = "prediction.avsc"
MODEL_ENVELOPE_SCHEMA = "model_envelope.avsc"
MODEL_CHUNK_SCHEMA = "model_chunk.avsc"
MODEL_CONTROL_SCHEMA = "model_control.avsc"
LABEL_SCHEMA = "label.avsc"

#: A label or prediction as the Avro union ``[null, boolean, long, double, string]`` carries it.
Label = bool | int | float | str | None


def avro_label(value: Any) -> Label:
    """Coerce a prediction to a type the Avro label union accepts (numpy scalars are not)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        plain = item()
        if plain is None or isinstance(plain, (bool, int, float, str)):
            return plain
    return str(value)


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """A validated, featurized event, keyed like its source event (written by the processor)."""

    TOPIC: ClassVar[str] = FEATURES
    SCHEMA: ClassVar[str] = FEATURE_VECTOR_SCHEMA

    key: str | None
    event_id: str
    #: Event time, epoch milliseconds.
    event_time: int
    features: dict[str, float]
    label: Label
    source_topic: str
    source_partition: int
    source_offset: int


@dataclass(frozen=True, slots=True)
class Prediction:
    """A prediction and the model version that made it (written by the stream scorer)."""

    TOPIC: ClassVar[str] = PREDICTIONS
    SCHEMA: ClassVar[str] = PREDICTION_SCHEMA

    key: str | None
    event_id: str
    event_time: int
    model_name: str
    model_version: int
    prediction: Label
    probabilities: dict[str, float]
    label: Label
    #: When it was scored, epoch milliseconds.
    scored_at: int


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A label that arrives after its event, keyed by the event id (delayed-label mode)."""

    TOPIC: ClassVar[str] = LABELS
    SCHEMA: ClassVar[str] = LABEL_SCHEMA

    event_id: str
    label: Label
    #: When the outcome became known, epoch milliseconds.
    label_time: int


R = TypeVar("R", FeatureVector, Prediction, LabelRecord)


class RecordCodec(Generic[R]):
    """Avro encoding of one record type with its bundled schema.

    ``encode`` raises :class:`~streamml.errors.RecordError`, ``decode``
    :class:`~streamml.errors.DecodeError` (see :class:`AvroSerde`); ``serde``
    is the dict-level codec underneath, for tools that want plain dicts.
    """

    def __init__(self, record_type: type[R]) -> None:
        self.record_type: type[R] = record_type
        self.serde = AvroSerde(bundled_schema(record_type.SCHEMA))
        self._fields = tuple(f.name for f in fields(record_type))

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """Headers naming the writer schema; send them with every record."""
        return self.serde.headers

    def encode(self, record: R) -> bytes:
        return self.serde.encode({name: getattr(record, name) for name in self._fields})

    def decode(self, value: bytes | None, headers: Headers = None) -> R:
        return self.record_type(**self.serde.decode(value, headers))


# -- dead letters -----------------------------------------------------------
DLQ_PREFIX = "streamml.dlq."
DEAD_LETTER_STAGES = ("decode", "validate", "featurize")
_INT_HEADERS = ("source.partition", "source.offset", "original.size")


@dataclass(frozen=True)
class DeadLetterReason:
    """Why a record was quarantined, as the headers of its dead letter carry it.

    A quarantined record keeps its original key, value and headers; these
    reason headers are appended (``streamml.dlq.<name>``)::

        stage             decode | validate | featurize
        rule              first rule broken (e.g. undecodable, below_min)
        field             field of that rule, empty when none
        message           human-readable explanation
        violations        JSON list of every violation [{field, rule, message}]
        source.topic      where the record was read
        source.partition
        source.offset
        source.timestamp  the record's own timestamp, epoch ms (empty if none)
        timestamp         when it was quarantined, epoch ms
        original.size     set when the record was too large to keep whole: its
        original.sha256   size in bytes and the sha256 of its value (the value
                          is then truncated, the original headers dropped)

    A record quarantined twice (after a replay) carries both reasons; reading
    takes the newest (the last header of each name).
    """

    TOPIC: ClassVar[str] = DEAD_LETTERS

    stage: str
    rule: str
    field: str
    message: str
    # dataclasses.field, not the ``field`` attribute above.
    violations: list[dict[str, str]] = dataclasses.field(default_factory=list)
    source_topic: str = ""
    source_partition: int | None = None
    source_offset: int | None = None
    source_timestamp: int | None = None
    timestamp: int | None = None
    #: Set when the dead letter could not keep the whole record: its original
    #: size in bytes (value, key and headers) and the sha256 of its value.
    original_size: int | None = None
    original_sha256: str = ""

    #: Header names (without the prefix) in the order they are written.
    HEADER_NAMES: ClassVar[tuple[str, ...]] = (
        "stage", "rule", "field", "message", "violations",
        "source.topic", "source.partition", "source.offset", "source.timestamp", "timestamp",
        "original.size", "original.sha256",
    )

    def headers(self, original: Headers = None) -> list[tuple[str, bytes | None]]:
        """Return ``original`` headers followed by this reason's headers."""
        values = {
            "stage": self.stage,
            "rule": self.rule,
            "field": self.field,
            "message": self.message,
            "violations": json.dumps(self.violations, separators=(",", ":")),
            "source.topic": self.source_topic,
            "source.partition": _text(self.source_partition),
            "source.offset": _text(self.source_offset),
            "source.timestamp": _text(self.source_timestamp),
            "timestamp": _text(self.timestamp),
            "original.size": _text(self.original_size),
            "original.sha256": self.original_sha256,
        }
        out: list[tuple[str, bytes | None]] = list(original or ())
        for name in self.HEADER_NAMES:
            limit = _VIOLATIONS_BYTES if name == "violations" else _HEADER_BYTES
            out.append((DLQ_PREFIX + name, _capped(values[name], limit)))
        return out

    @classmethod
    def read(cls, headers: Headers) -> dict[str, Any]:
        """Read the reason headers of a dead letter back into a dict (for tools and tests).

        Keys are the header names without the prefix; ``violations`` is
        decoded from JSON and the source partition and offset are ints.
        Missing headers are absent from the result.
        """
        out: dict[str, Any] = {}
        for name in cls.HEADER_NAMES:
            raw = header_value(headers, DLQ_PREFIX + name)
            if raw is not None:
                out[name] = raw.decode("utf-8", errors="replace")
        if "violations" in out:
            out["violations"] = json.loads(out["violations"])
        for name in _INT_HEADERS:
            if out.get(name):
                out[name] = int(out[name])
        return out

    @staticmethod
    def rule_of(headers: Headers) -> str | None:
        """The newest ``rule`` header of a dead letter, ``None`` when it has none."""
        raw = header_value(headers, DLQ_PREFIX + "rule")
        return None if raw is None else raw.decode("utf-8", errors="replace")


#: Longest reason header value, in bytes; a message quoting a huge offending
#: value is cut (marked with "…") so the dead letter always fits a request.
_HEADER_BYTES = 4096
_VIOLATIONS_BYTES = 16384


def _capped(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return raw
    # A cut violations list is no longer JSON: keep it parseable as a one-item note.
    if text.startswith("["):
        return json.dumps([{"field": "", "rule": "truncated", "message": text[: limit // 8]}]).encode()
    return raw[: limit - 3] + "…".encode()


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
