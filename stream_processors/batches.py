"""What one batch of the stream processor reads and writes: plain records, no Kafka.

:class:`SourceRecord` is a raw record as consumed; :class:`BatchResult` holds
exactly one output per input (a feature vector or a dead letter) plus the
window state to save, the monitoring records and, in delayed-label mode, the
vectors waiting for their label. :mod:`stream_processors.pipeline` makes them,
:mod:`stream_processors.app` sends them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from streamml.kafka import format_record
from streamml.windows import WindowState

__all__ = ["Headers", "SourceRecord", "OutputRecord", "WindowUpdate", "BatchResult"]

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A raw record as consumed: bytes and where it came from."""

    value: bytes | None
    key: bytes | None
    headers: Headers
    topic: str
    partition: int
    offset: int
    #: The record's Kafka timestamp, epoch milliseconds, when it has one.
    timestamp_ms: int | None = None

    @property
    def position(self) -> str:
        """``topic[partition]@offset``, as every log line names a record."""
        return format_record(self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A record to produce; ``partition`` ``None`` lets the producer choose by key."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    partition: int | None
    #: The input it answers, for logs and for at-least-once bookkeeping.
    source: SourceRecord


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """New window state of one key: ``state`` to store, ``value`` (its JSON) to changelog to ``partition``."""

    partition: int
    state: WindowState
    value: bytes


@dataclass
class BatchResult:
    """What one batch produced: one output per input, plus the window state to save."""

    features: list[OutputRecord] = field(default_factory=list)
    dead_letters: list[OutputRecord] = field(default_factory=list)
    #: Keyed like the window table (the record key bytes).
    window_updates: dict[bytes, WindowUpdate] = field(default_factory=dict)
    #: Records for the monitoring topic (references and closed windows), if any.
    monitoring: list[OutputRecord] = field(default_factory=list)
    #: Delayed-label mode: the feature vectors without a label, keyed by event id.
    awaiting_label: list[OutputRecord] = field(default_factory=list)
    #: How many of the dead letters each rule quarantined.
    quarantined: Counter[str] = field(default_factory=Counter)

    # allows ``features, dead_letters = processor.process_batch(...)``
    def __iter__(self) -> Iterator[list[OutputRecord]]:
        return iter((self.features, self.dead_letters))


