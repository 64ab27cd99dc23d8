"""Delayed labels: events sent without their label, the label sent later on its own topic.

In delayed-label mode (``streamml produce --label-delay MAX_SECONDS``) each
event that has an event id and a label is sent with its label field set to
``None``; a :class:`~streamml.records.LabelRecord` for it goes to the labels
topic (``labels.v1``) after a delay drawn uniformly from ``[0, MAX_SECONDS]``,
the way a click or a chargeback becomes known some time after the event.
``--label-duplicates`` sends a fraction of the labels twice (the copy with a
delay of its own), so the processor's join meets out-of-order and duplicate
labels. A delay of 0 sends each label right after its event.

Co-partitioning. A label record is keyed by its event id (utf-8) and MUST be
partitioned with murmur2 (librdkafka ``partitioner=murmur2_random``): the
processor (faust on aiokafka, which hashes keys with murmur2 like the Java
client) repartitions the feature vectors waiting for their label by the same
event id, and the join only works if both sides of one event land on the same
partition number. librdkafka's own default, ``consistent_random`` (CRC32),
would put them on different partitions and no label would ever meet its
features. :class:`LabelProducer` therefore sets the partitioner itself instead
of relying on the client factory's default.

:class:`LabelScheduler` is the pure part (a seeded heap of labels by due time,
with an injectable clock); :class:`LabelProducer` sends what comes due.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from producers.app import EventProducer, ProducerStats
from producers.events import RawPayload, SourceItem
from streamml.config import Settings
from streamml.errors import ConfigError, KafkaClientError
from streamml.records import Label, LabelRecord, RecordCodec, avro_label
from streamml.topics import Topics

__all__ = [
    "EVENT_ID_FIELD",
    "LABEL_PARTITIONER",
    "DetachedLabel",
    "detach_label",
    "check_label_options",
    "LabelScheduler",
    "LabelProducer",
]

logger = logging.getLogger(__name__)

#: The event field a label record names its event by (the processor reads the
#: same field; components do not import each other, so the name is repeated).
EVENT_ID_FIELD = "event_id"
#: The partitioner of the labels producer: murmur2, as aiokafka and the Java
#: client hash keys, so a label lands on its event's feature-vector partition.
LABEL_PARTITIONER = "murmur2_random"


@dataclass(frozen=True, slots=True)
class DetachedLabel:
    """A label taken off an event, to be sent later."""

    event_id: str
    label: Label


def detach_label(
    item: SourceItem, label_field: str, *, event_id_field: str = EVENT_ID_FIELD
) -> tuple[SourceItem, DetachedLabel | None]:
    """Return ``item`` with its label set to ``None``, and the label taken off it.

    Raw payloads, events without an event id and events without a label come
    back unchanged, with ``None``: no label is sent for them. An empty or
    otherwise falsy event id counts as none, since the processor then names the
    event by its topic position, which no label could know. The input is never
    modified.

    >>> detach_label({"event_id": "e1", "label": 1, "age": 30}, "label")
    ({'event_id': 'e1', 'label': None, 'age': 30}, DetachedLabel(event_id='e1', label=1))
    >>> detach_label({"event_id": "", "label": 1}, "label")
    ({'event_id': '', 'label': 1}, None)
    """
    if isinstance(item, RawPayload):
        return item, None
    label = item.get(label_field)
    event_id = item.get(event_id_field)
    if label is None or not event_id:
        return item, None
    stripped = dict(item)
    stripped[label_field] = None
    return stripped, DetachedLabel(str(event_id), avro_label(label))


def check_label_options(max_delay: float | None, duplicates: float = 0.0) -> None:
    """Raise :class:`ConfigError` naming every problem with the delayed-label options.

    ``max_delay`` (``None``: labels stay in the events) must be a finite number
    of seconds >= 0 and ``duplicates`` a fraction in [0, 1], which only
    applies with a delay.
    """
    problems = []
    if max_delay is not None and not (math.isfinite(max_delay) and max_delay >= 0):
        problems.append(f"label delay must be a finite number of seconds >= 0, got {max_delay}")
    if not 0.0 <= duplicates <= 1.0:  # also refuses NaN
        problems.append(f"label duplicates must be a fraction between 0 and 1, got {duplicates}")
    elif duplicates and max_delay is None:
        problems.append("label duplicates apply to delayed labels only: set a label delay too")
    if problems:
        raise ConfigError("; ".join(problems))


class LabelScheduler:
    """Labels waiting to be sent, in a heap ordered by due time (pure: no Kafka, no sleeping).

    Each label added at ``now`` is due at ``now + uniform(0, max_delay)``;
    with probability ``duplicates`` a copy is scheduled too, with a delay
    drawn independently. Delays come from ``random.Random(seed)`` and the
    duplicate choices (and the copies' delays) from a second generator, so one
    seed gives the same delays for the first copies whatever the fraction.
    ``now`` is any monotonic clock in seconds; ``wall_clock`` (epoch seconds)
    stamps ``label_time`` when a label is released. Labels due at the same
    time come out in the order they were added.

    >>> scheduler = LabelScheduler(0.0, wall_clock=lambda: 1_700_000_000.0)
    >>> scheduler.add("e1", True, now=5.0)
    1
    >>> scheduler.due(5.0)
    [LabelRecord(event_id='e1', label=True, label_time=1700000000000)]
    """

    def __init__(
        self,
        max_delay: float,
        *,
        duplicates: float = 0.0,
        seed: int = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_label_options(max_delay, duplicates)
        self.max_delay = float(max_delay)
        self.duplicates = float(duplicates)
        self.seed = seed
        self._delays = random.Random(seed)
        self._copies = random.Random(seed + 1)
        self._wall_clock = wall_clock
        # (due, sequence, event id, label, is a duplicate): the sequence keeps
        # the order of equal due times and spares comparing labels.
        self._heap: list[tuple[float, int, str, Label, bool]] = []
        self._sequence = 0
        #: Labels scheduled so far, copies included, and the copies among them.
        self.scheduled = 0
        self.scheduled_duplicates = 0
        #: Labels released by :meth:`due` so far, and the copies among them.
        self.released = 0
        self.released_duplicates = 0

    @property
    def pending(self) -> int:
        """Labels scheduled and not yet released."""
        return len(self._heap)

    @property
    def next_due(self) -> float | None:
        """When the earliest pending label is due (on the ``now`` clock), ``None`` when none is."""
        return self._heap[0][0] if self._heap else None

    def add(self, event_id: str, label: Label, now: float) -> int:
        """Schedule the label of ``event_id``; return how many records that makes (1, or 2 with a copy)."""
        self._push(now + self._delays.uniform(0.0, self.max_delay), event_id, label, duplicate=False)
        if self.duplicates and self._copies.random() < self.duplicates:
            self._push(now + self._copies.uniform(0.0, self.max_delay), event_id, label, duplicate=True)
            return 2
        return 1

    def due(self, now: float) -> list[LabelRecord]:
        """Remove and return the labels due at ``now`` (all of them for ``math.inf``), earliest first."""
        out: list[LabelRecord] = []
        if not self._heap or self._heap[0][0] > now:
            return out
        label_time = int(self._wall_clock() * 1000)
        while self._heap and self._heap[0][0] <= now:
            _, _, event_id, label, duplicate = heapq.heappop(self._heap)
            out.append(LabelRecord(event_id=event_id, label=label, label_time=label_time))
            self.released += 1
            self.released_duplicates += duplicate
        return out

    def _push(self, due: float, event_id: str, label: Label, *, duplicate: bool) -> None:
        heapq.heappush(self._heap, (due, self._sequence, event_id, label, duplicate))
        self._sequence += 1
        self.scheduled += 1
        self.scheduled_duplicates += duplicate


class LabelProducer:
    """Send delayed labels to the labels topic as they come due, with delivery accounting.

    The caller schedules labels (:meth:`schedule`) and calls :meth:`release`
    often (the produce loop does after every event and while it waits), so no
    label waits for the event stream and the event stream never waits for a
    label. :meth:`drain` sends the rest as they come due, then flushes.
    ``clock`` is the scheduling clock (monotonic seconds); ``topic`` defaults
    to the namespace's labels topic.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_delay: float,
        duplicates: float = 0.0,
        seed: int = 0,
        topic: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.scheduler = LabelScheduler(max_delay, duplicates=duplicates, seed=seed, wall_clock=wall_clock)
        self.topic = topic or Topics.from_settings(settings).labels
        self._clock = clock
        self._codec = RecordCodec(LabelRecord)
        self._headers = self._codec.headers
        config = dict(client_config or {})
        # Set here, not left to make_producer's default: the processor finds a
        # label by hashing its event id with murmur2 (aiokafka), and
        # librdkafka's own default (consistent_random, CRC32) would send the
        # label to another partition than its features (see the module doc).
        config["partitioner"] = LABEL_PARTITIONER
        self._producer = EventProducer(
            settings, topic=self.topic, schema=self._codec.serde.reader, client_config=config
        )

    @property
    def stats(self) -> ProducerStats:
        """Delivery counts of the label records so far."""
        return self._producer.stats

    @property
    def sent(self) -> int:
        """Label records handed to the client, duplicates included."""
        return self.scheduler.released

    @property
    def duplicates_sent(self) -> int:
        """Of :attr:`sent`, the second copies."""
        return self.scheduler.released_duplicates

    @property
    def pending(self) -> int:
        return self.scheduler.pending

    @property
    def next_due(self) -> float | None:
        return self.scheduler.next_due

    def schedule(self, detached: DetachedLabel) -> None:
        """Schedule a label taken off an event that has just been sent."""
        self.scheduler.add(detached.event_id, detached.label, self._clock())

    def release(self, now: float | None = None) -> int:
        """Send the labels due at ``now`` (default: the clock's now); return how many."""
        records = self.scheduler.due(self._clock() if now is None else now)
        for record in records:
            self._producer.send_raw(self._codec.encode(record), key=record.event_id, headers=self._headers)
        return len(records)

    def drain(self, flush_timeout: float = 30.0) -> ProducerStats:
        """Send the pending labels as they come due (at most ``max_delay`` from now), then flush.

        Delivery reports are served while waiting. Raises
        :class:`KafkaClientError` if labels are still undelivered after
        ``flush_timeout`` seconds.
        """
        # Every pending label was due at most max_delay after it was added, so
        # none is due later than this; past it, the rest goes at once.
        deadline = self._clock() + self.scheduler.max_delay
        while self.scheduler.pending:
            self.release()
            next_due = self.scheduler.next_due
            if next_due is None:
                break
            now = self._clock()
            if now >= deadline:
                self.release(math.inf)
                break
            # poll returns early on a delivery report: the loop re-checks.
            self._producer.poll(max(min(next_due, deadline) - now, 0.001))
        return self._producer.flush(flush_timeout)

    def close(self, flush_timeout: float = 30.0) -> ProducerStats:
        """Send every pending label at once, then flush: for a run that ends early."""
        if self.scheduler.pending:
            logger.warning("sending %d pending labels to %s at once", self.scheduler.pending, self.topic)
            self.release(math.inf)
        return self._producer.flush(flush_timeout)

    def __enter__(self) -> LabelProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The events sent before the error are delivered (EventProducer
        # flushes them): their labels are still worth sending, but a flush
        # failure must not hide the error that ended the run.
        try:
            self.close()
        except KafkaClientError as flush_error:
            logger.warning("while handling %s: %s", type(exc).__name__, flush_error)
