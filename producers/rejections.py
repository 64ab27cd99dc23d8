"""What a run does with a row that does not fit the schema, and what it says about it.

Three policies (``--on-error``):

``stop``
    The default. The run ends with :class:`RowStopped`, a :class:`RecordError`
    whose message says how many rows before it were sent and acknowledged
    (the producer is flushed first, so the count is what the broker has).
``skip``
    The row is left out, reported (the first :data:`SHOWN_REJECTIONS` one line
    each, then a count) and counted in the run's report.
``deadletter``
    The row goes to the raw topic's dead-letter topic with the same reason
    headers the stream processor writes (:class:`~streamml.records.DeadLetterReason`,
    stage ``ingest``), its value the row as read, as JSON, plus two headers
    naming the file and the row number (:data:`FILE_HEADER`, :data:`ROW_HEADER`).

Rules: ``coercion`` (a cell is not of the field's type, or is empty in a
field that is not nullable) and ``encoding`` (a typed record the Avro encoder
refuses, or a record without a key).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from producers.coercion import is_missing
from streamml.errors import RecordError
from streamml.records import DLQ_PREFIX, DeadLetterReason

__all__ = [
    "OnError",
    "ON_ERROR_POLICIES",
    "INGEST_STAGE",
    "SHOWN_REJECTIONS",
    "FILE_HEADER",
    "ROW_HEADER",
    "RejectedRow",
    "RowStopped",
    "RejectionLog",
    "sent_before",
    "dead_letter",
]

OnError = Literal["stop", "skip", "deadletter"]
ON_ERROR_POLICIES: tuple[OnError, ...] = ("stop", "skip", "deadletter")
#: The dead-letter stage of rows refused before they reach Kafka.
INGEST_STAGE = "ingest"
#: Rejected rows reported one line each; the rest are only counted.
SHOWN_REJECTIONS = 20
#: Headers of an ingest dead letter naming where the row came from. Prefixed
#: like the reason headers, so a replay does not carry them to the raw topic.
FILE_HEADER = DLQ_PREFIX + "source.file"
ROW_HEADER = DLQ_PREFIX + "source.row"


@dataclass(frozen=True)
class RejectedRow:
    """A row the run did not send to the events topic, and why."""

    #: 1-based row number in the source.
    row: int
    error: RecordError
    #: ``coercion`` or ``encoding`` (see the module docstring).
    rule: str
    #: The row as read, for the dead letter; ``None`` when there is nothing to keep.
    raw: Mapping[str, Any] | None


class RowStopped(RecordError):
    """A bad row ended the run (``on_error="stop"``); the message says what was sent before it.

    ``error`` is the row's own error; ``acknowledged`` the events the broker
    acknowledged before the run stopped.
    """

    def __init__(self, error: RecordError, accounting: str, *, acknowledged: int) -> None:
        super().__init__(f"{error.reason}; {accounting}", row=error.row, field=error.field)
        self.error = error
        self.accounting = accounting
        self.acknowledged = acknowledged


def sent_before(
    row: int,
    *,
    delivered: int,
    failed: int,
    already_on_topic: int = 0,
    skipped: int = 0,
    dead_lettered: int = 0,
    unconfirmed: str = "",
) -> str:
    """Say what happened to the rows before ``row``, from the flushed producer's counts.

    ``rows 1-201 were sent and acknowledged`` when all of them were; otherwise
    how many were, and what became of the others. ``unconfirmed`` is why the
    flush could not confirm the rest (the broker went away).
    """
    before = row - 1
    if before <= 0:
        return "no rows were sent before it"
    others = [
        (already_on_topic, "already on the topic (not sent again)"),
        (skipped, "skipped as bad"),
        (dead_lettered, "sent to the dead-letter topic"),
        (failed, "FAILED delivery"),
    ]
    if not unconfirmed and not failed and delivered + already_on_topic == before:
        if not already_on_topic:
            span = "row 1 was" if before == 1 else f"rows 1-{before} were"
            return f"{span} sent and acknowledged"
        return (
            f"rows 1-{before} are on the topic ({delivered} sent and acknowledged now, "
            f"{already_on_topic} already there)"
        )
    detail = ", ".join(f"{count} {what}" for count, what in others if count)
    text = f"{delivered} of the {before} rows before it were sent and acknowledged"
    if detail:
        text += f" ({detail})"
    if unconfirmed:
        text += f"; the rest could not be confirmed: {unconfirmed}"
    return text


class RejectionLog:
    """The lines a run prints about rejected rows: the first ``shown`` one each, then a total.

    ``verb`` says what was done with them (``skipped``, ``dead-lettered``).
    """

    def __init__(self, verb: str, *, shown: int = SHOWN_REJECTIONS) -> None:
        self.verb = verb
        self.shown = shown
        self.count = 0

    def add(self, rejected: RejectedRow) -> str | None:
        """Count one rejected row; return its line while fewer than ``shown`` were printed."""
        self.count += 1
        if self.count > self.shown:
            return None
        return f"{self.verb} {rejected.error} [{rejected.rule}]"

    def total(self) -> str | None:
        """The closing line (``None`` when no row was rejected)."""
        if not self.count:
            return None
        rows = "row" if self.count == 1 else "rows"
        hidden = f"; {self.count - self.shown} not shown above" if self.count > self.shown else ""
        return f"{self.verb} {self.count} {rows} that do not fit the schema{hidden}"


def dead_letter(
    rejected: RejectedRow, *, source: str, file: str, key_field: str, now_ms: int
) -> tuple[bytes, str | None, list[tuple[str, bytes]]]:
    """The ``(value, key, headers)`` of the dead letter of a rejected row.

    ``source`` names the source (``csv(data.csv)``), ``file`` the file (or
    the source's name when it is not a file). The key is the row's key field
    as read, when it has one, so the dead letter sorts with its key's events.
    """
    error = rejected.error
    reason = DeadLetterReason(
        stage=INGEST_STAGE,
        rule=rejected.rule,
        field=error.field or "",
        message=str(error),
        violations=[{"field": error.field or "", "rule": rejected.rule, "message": error.reason}],
        source_topic=source,
        timestamp=now_ms,
    )
    origin = [(FILE_HEADER, file.encode("utf-8")), (ROW_HEADER, str(rejected.row).encode())]
    # Every reason header has a value (empty text for a missing one).
    headers = [(name, value or b"") for name, value in reason.headers(origin)]
    raw = rejected.raw or {}
    key_value = raw.get(key_field)
    key = None if is_missing(key_value) else str(key_value)
    return _json_row(raw), key, headers


def _json_row(raw: Mapping[str, Any]) -> bytes:
    """The row as JSON: a NaN (pandas' missing value) is null; other values JSON lacks are text."""
    plain = {str(k): _plain(v) for k, v in raw.items()}
    return json.dumps(plain, default=str, allow_nan=False, ensure_ascii=False).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value
