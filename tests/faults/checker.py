"""What went in, what came out: the fault tier's checker (Jepsen / Kafka system-test style).

A fault test records every raw event the broker *acknowledged* (from delivery
callbacks: an event the broker never acknowledged was never promised), runs
the pipeline through a fault, reads every output topic to its end and counts:

- ``lost``: acknowledged events found in no output (neither featurized nor
  quarantined). The guarantee is ``lost == 0`` under every fault.
- ``duplicates``: extra copies (at-least-once allows them; they are counted and
  reported, and bounded loosely by the tests).
- ``unexpected``: outputs that name a source record nobody produced.

An event is identified by where it landed in the raw topic, ``(partition,
offset)``: a feature vector carries ``source_partition``/``source_offset``, a
dead letter its ``streamml.dlq.source.partition``/``source.offset`` headers, so
even undecodable bytes (which have no event id) are accounted for. The event id
is kept beside it for readable reports.

Example::

    ledger = Ledger(settings, topics)
    producer.produce(topics.raw_events, value, on_delivery=ledger.on_delivery("e1"))
    ...
    report = check(ledger.read_outputs())
    print(report.format("processor-kill x3"))
    assert report.lost == 0, report.lost_sample
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.records import DeadLetterReason, FeatureVector, RecordCodec
from streamml.topics import Topics

__all__ = ["Position", "Output", "Ledger", "Report", "check", "recovery_seconds", "first_output_after", "now_ms"]

#: Where a raw event landed: ``(partition, offset)`` of the raw topic.
Position = tuple[int, int]

_FEATURES = RecordCodec(FeatureVector)


@dataclass(frozen=True)
class Output:
    """One output record traced back to its source raw record."""

    kind: str  # "feature" or "dead_letter"
    source: Position
    event_id: str | None
    #: The output record's own broker timestamp, epoch ms (used for recovery times).
    timestamp_ms: int
    partition: int
    offset: int
    rule: str | None = None


@dataclass
class Ledger:
    """Acknowledged produced events, and the outputs read back.

    ``produced`` maps a raw position to the event id it carries (``None`` for
    records without one, e.g. random bytes). Thread-safe for delivery callbacks.
    """

    settings: Settings
    topics: Topics
    produced: dict[Position, str | None] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- what went in ------------------------------------------------------
    def on_delivery(self, event_id: str | None) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback that records ``event_id`` at its position once the broker acknowledged it."""

        def delivered(err: KafkaError | None, msg: Message) -> None:
            partition, offset = msg.partition(), msg.offset()
            if err is not None or partition is None or offset is None or offset < 0:
                with self._lock:
                    self.failed.append(f"{event_id}: {err}")
                return
            self.acknowledged((partition, offset), event_id)

        return delivered

    def acknowledged(self, position: Position, event_id: str | None) -> None:
        """Record one acknowledged event (for producers whose acks come from elsewhere, e.g. a file)."""
        with self._lock:
            self.produced[position] = event_id

    def acknowledged_from_topic(self, messages: Iterable[Message], event_id: Callable[[Message], str | None]) -> None:
        """Record every record of the raw topic as produced (when the topic itself is the ledger)."""
        for m in messages:
            self.acknowledged((m.partition() or 0, m.offset() or 0), event_id(m))

    # -- what came out -----------------------------------------------------
    def read_outputs(self, *, timeout: float = 30.0) -> Ledger:
        """Read the features and dead-letter topics to their end (replacing earlier reads); return self."""
        cluster = Cluster(self.settings)
        outputs: list[Output] = []
        for m in read_to_end(cluster, self.topics.features, timeout=timeout):
            vector = _FEATURES.decode(m.value(), m.headers())
            outputs.append(Output(
                "feature", (vector.source_partition, vector.source_offset), vector.event_id,
                _timestamp(m), m.partition() or 0, m.offset() or 0,
            ))
        for m in read_to_end(cluster, self.topics.dead_letters, timeout=timeout):
            reason = DeadLetterReason.read(m.headers())
            partition, offset = reason.get("source.partition"), reason.get("source.offset")
            if reason.get("source.topic") != self.topics.raw_events or partition is None or offset is None:
                # Not one of the raw topic's (e.g. a producer's ingest rejection): no source position.
                partition, offset = -1, m.offset() or 0
            outputs.append(Output(
                "dead_letter", (int(partition), int(offset)), None,
                _timestamp(m), m.partition() or 0, m.offset() or 0, rule=reason.get("rule") or None,
            ))
        self.outputs = outputs
        return self

    def snapshot(self) -> dict[Position, str | None]:
        with self._lock:
            return dict(self.produced)


def _timestamp(m: Message) -> int:
    kind, ts = m.timestamp()
    return int(ts) if ts and ts > 0 else 0


@dataclass(frozen=True)
class Report:
    """The counts of one fault run."""

    produced: int
    out: int
    featurized: int
    quarantined: int
    lost: int
    duplicates: int
    duplicated_events: int
    unexpected: int
    lost_sample: tuple[Any, ...] = ()
    unexpected_sample: tuple[Any, ...] = ()
    #: Quarantined outputs without a rule header (a dead letter must say why).
    without_rule: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def format(self, name: str = "", **figures: Any) -> str:
        """``faults: NAME: events N, lost 0, duplicates 12, ...`` (one line, for the test log)."""
        parts = [
            f"events {self.produced}", f"out {self.out} ({self.featurized} featurized, {self.quarantined} quarantined)",
            f"lost {self.lost}", f"duplicates {self.duplicates}", f"unexpected {self.unexpected}",
        ]
        parts += [f"{k.replace('_', ' ')} {v}" for k, v in {**self.extra, **figures}.items()]
        return f"faults: {name + ': ' if name else ''}{', '.join(parts)}"


def check(ledger: Ledger, *, sample: int = 10) -> Report:
    """Count lost, duplicated and unexpected records of ``ledger`` (read its outputs first)."""
    produced = ledger.snapshot()
    seen = Counter(o.source for o in ledger.outputs)
    lost = sorted(p for p in produced if p not in seen)
    unexpected = sorted(p for p in seen if p not in produced)
    duplicated = {p: n - 1 for p, n in seen.items() if n > 1 and p in produced}
    return Report(
        produced=len(produced),
        out=len(ledger.outputs),
        featurized=sum(1 for o in ledger.outputs if o.kind == "feature"),
        quarantined=sum(1 for o in ledger.outputs if o.kind == "dead_letter"),
        lost=len(lost),
        duplicates=sum(duplicated.values()),
        duplicated_events=len(duplicated),
        unexpected=len(unexpected),
        lost_sample=tuple((p, produced[p]) for p in lost[:sample]),
        unexpected_sample=tuple(unexpected[:sample]),
        without_rule=sum(1 for o in ledger.outputs if o.kind == "dead_letter" and not o.rule),
    )


def first_output_after(ledger: Ledger, since_ms: int) -> int | None:
    """Timestamp (epoch ms) of the earliest output record written at or after ``since_ms``; None if none."""
    stamps = [o.timestamp_ms for o in ledger.outputs if o.timestamp_ms >= since_ms]
    return min(stamps) if stamps else None


def recovery_seconds(ledger: Ledger, restarts_ms: Iterable[int]) -> list[float | None]:
    """For each restart time (epoch ms): seconds to the first output record written after it.

    Read the outputs first. A restart followed by no output at all gives None.
    """
    out: list[float | None] = []
    for restart in restarts_ms:
        first = first_output_after(ledger, restart)
        out.append(None if first is None else round((first - restart) / 1000, 2))
    return out


def now_ms() -> int:
    """Wall-clock epoch milliseconds (the clock broker timestamps use)."""
    return int(time.time() * 1000)
