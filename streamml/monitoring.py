"""Records of the monitoring topic: distribution profiles, drift scores and references.

The stream processor's distribution monitor writes them; ``streamml drift``,
the demo and a retraining trigger read them. They are JSON (UTF-8), not Avro:
small, infrequent, and readable with any Kafka tool (``kcat -C -t
monitoring.v1``). Every record carries ``"format": 1`` and a ``kind``:

* ``reference``: what the windows are compared with, per field (101
  quantiles for a numeric field, category shares for a categorical one) and
  where it came from (the schema's profile or the first events seen);
* ``profile``: one window of valid events: per field its statistics and drift
  scores, and the alerts the window raised;
* ``labels``: the delayed-label join's counts since its processor started
  (``fields.counts``: joined, duplicates, expired unlabelled, unmatched labels)
  and what is waiting (``fields.waiting``).

The record key is the event stream's name (the event schema's name), so one
topic can serve several pipelines' streams. See ``docs/drift.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamml.errors import RecordError

__all__ = [
    "FORMAT",
    "REFERENCE",
    "PROFILE",
    "LABELS",
    "Alert",
    "MonitoringRecord",
    "encode_record",
    "decode_record",
    "latest_by_source",
]

FORMAT = 1
REFERENCE = "reference"
PROFILE = "profile"
LABELS = "labels"
_KINDS = (REFERENCE, PROFILE, LABELS)


@dataclass(frozen=True)
class Alert:
    """One rule a window broke: a drift score or a batch-level contract rule past its threshold."""

    field: str
    #: ``psi`` (drift) or a contract rule: ``max_null_rate``, ``max_category_share``, ``max_unseen_share``.
    rule: str
    value: float
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field, "rule": self.rule, "value": self.value,
            "threshold": self.threshold, "message": self.message,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Alert:
        return cls(
            field=str(raw["field"]), rule=str(raw["rule"]), value=float(raw["value"]),
            threshold=float(raw["threshold"]), message=str(raw["message"]),
        )


@dataclass(frozen=True)
class MonitoringRecord:
    """One record of the monitoring topic (see the module doc for the kinds)."""

    kind: str
    #: The event stream (event schema name); the record key.
    stream: str
    #: Which monitor wrote it: ``<processor group>@<host>:<pid>``.
    source: str
    created_at: int
    #: Per field: statistics and scores (profile) or the reference distribution.
    fields: dict[str, dict[str, Any]]
    #: Profiles: the window's number for its source, counting from 1.
    window: int = 0
    #: Valid events the record describes (a window or the reference sample).
    events: int = 0
    #: Profiles: events quarantined while the window filled.
    quarantined: int = 0
    #: Valid events the source has seen since it started, this window's included.
    observed: int = 0
    first_event_time: int | None = None
    last_event_time: int | None = None
    #: References: ``schema profile`` or ``first events``; profiles: the reference's origin.
    origin: str = ""
    alerts: tuple[Alert, ...] = field(default_factory=tuple)

    @property
    def drifted(self) -> list[str]:
        """Fields whose drift score crossed its threshold in this window."""
        return [alert.field for alert in self.alerts if alert.rule == "psi"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "kind": self.kind, "stream": self.stream, "source": self.source,
            "created_at": self.created_at, "window": self.window, "events": self.events,
            "quarantined": self.quarantined, "observed": self.observed, "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time, "origin": self.origin,
            "fields": self.fields, "alerts": [alert.as_dict() for alert in self.alerts],
        }


def encode_record(record: MonitoringRecord) -> tuple[bytes, bytes]:
    """Return the ``(key, value)`` to produce for ``record``."""
    value = json.dumps(record.as_dict(), separators=(",", ":"), allow_nan=False).encode()
    return record.stream.encode(), value


def decode_record(value: bytes | None) -> MonitoringRecord:
    """Parse one monitoring record; raise :class:`RecordError` for anything else."""
    try:
        raw = json.loads(value or b"")
        # type() is int, not ==: True == 1 and 1.0 == 1 are not format 1.
        if not isinstance(raw, dict) or type(raw.get("format")) is not int or raw["format"] != FORMAT:
            raise ValueError(f"not a monitoring record of format {FORMAT}")
        if raw.get("kind") not in _KINDS:
            raise ValueError(f"unknown kind {raw.get('kind')!r}; expected one of {', '.join(_KINDS)}")
        fields = raw["fields"]
        if not isinstance(fields, dict) or not all(isinstance(v, dict) for v in fields.values()):
            raise ValueError("'fields' must map names to objects")
        return MonitoringRecord(
            kind=raw["kind"], stream=str(raw["stream"]), source=str(raw["source"]),
            created_at=int(raw["created_at"]), fields=fields, window=int(raw.get("window", 0)),
            events=int(raw.get("events", 0)), quarantined=int(raw.get("quarantined", 0)),
            observed=int(raw.get("observed", 0)),
            first_event_time=_optional_int(raw.get("first_event_time")),
            last_event_time=_optional_int(raw.get("last_event_time")), origin=str(raw.get("origin", "")),
            alerts=tuple(Alert.from_dict(a) for a in raw.get("alerts", ())),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # json errors are ValueErrors
        raise RecordError(f"not a monitoring record: {exc}") from exc


def latest_by_source(records: Iterable[MonitoringRecord], kind: str = PROFILE) -> dict[str, MonitoringRecord]:
    """The newest record of ``kind`` per source (records in topic order)."""
    latest: dict[str, MonitoringRecord] = {}
    for record in records:
        if record.kind == kind:
            latest[record.source] = record
    return latest


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
