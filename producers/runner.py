"""Drive a source into Kafka: ``produce()`` (optionally with delayed labels), and the source spec parser."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from producers.app import EventProducer, ProducerStats
from producers.events import EventSource, RawPayload
from producers.files import CsvSource, JsonLinesSource, ParquetSource
from producers.labels import DetachedLabel, LabelProducer, check_label_options, detach_label
from producers.pacing import Pacer
from producers.synthetic import DEFAULT_LENGTH, SyntheticSource
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError, RecordError, SourceError
from streamml.serde import AvroSchema
from streamml.topics import Topics

__all__ = ["ProduceReport", "produce", "open_source", "FILE_SOURCES"]

logger = logging.getLogger(__name__)

#: File extension -> source class, for :func:`open_source`.
FILE_SOURCES = {
    ".csv": CsvSource,
    ".jsonl": JsonLinesSource,
    ".ndjson": JsonLinesSource,
    ".parquet": ParquetSource,
    ".pq": ParquetSource,
}


@dataclass(frozen=True)
class ProduceReport:
    """What one :func:`produce` run did (also passed, partial, to ``on_progress``)."""

    source: str
    topic: str
    sent: int
    delivered: int
    failed: int
    #: Events made bad on purpose by the source (fault injection), of ``sent``.
    injected_bad: int
    elapsed: float
    #: Achieved rate, events sent per second (the wait for the last delayed
    #: labels after the events were flushed is not counted).
    rate: float
    bytes: int = 0
    injected: Mapping[str, int] = field(default_factory=dict)
    #: The first few delivery failure reasons (events first, then labels).
    failures: tuple[str, ...] = ()
    #: Delayed-label mode: the labels topic, the label records sent to it
    #: (duplicates included), delivered and failed, and the duplicates sent.
    labels_topic: str = ""
    labels_sent: int = 0
    labels_delivered: int = 0
    labels_failed: int = 0
    label_duplicates: int = 0

    @property
    def ok(self) -> bool:
        """True when every sent event, and every sent label, was delivered."""
        return (
            self.failed == 0
            and self.delivered == self.sent
            and self.labels_failed == 0
            and self.labels_delivered == self.labels_sent
        )

    def summary(self) -> str:
        """One line for a terminal or log."""
        bad = f", {self.injected_bad} deliberately bad" if self.injected_bad else ""
        failed = f", {self.failed} FAILED" if self.failed else ""
        line = (
            f"{self.sent} events sent to {self.topic}, {self.delivered} delivered{failed}{bad} "
            f"in {self.elapsed:.1f}s ({self.rate:,.0f} events/s, {self.bytes / 1e6:.1f} MB)"
        )
        if self.labels_sent:
            duplicates = f" ({self.label_duplicates} duplicates)" if self.label_duplicates else ""
            labels_failed = f", {self.labels_failed} FAILED" if self.labels_failed else ""
            line += (
                f"; {self.labels_sent} labels sent to {self.labels_topic}{duplicates}, "
                f"{self.labels_delivered} delivered{labels_failed}"
            )
        return line


def produce(
    settings: Settings,
    source: EventSource,
    *,
    limit: int | None = None,
    rate: float | None = None,
    topic: str | None = None,
    on_progress: Callable[[ProduceReport], None] | None = None,
    progress_interval: float = 0.2,
    flush_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    label_delay: float | None = None,
    label_duplicates: float = 0.0,
    label_seed: int = 0,
    labels_topic: str | None = None,
) -> ProduceReport:
    """Send up to ``limit`` events of ``source`` at up to ``rate`` events/s, then flush.

    ``topic`` defaults to the pipeline's raw events topic. ``on_progress`` is
    called at most every ``progress_interval`` seconds, and once at the end.
    A row that does not fit the schema stops the run with :class:`RecordError`
    (its row number is the 1-based position in the source); events sent before
    it are still flushed. Delivery failures do not raise: check ``report.ok``.
    Raises :class:`KafkaClientError` if events are still undelivered after
    ``flush_timeout`` seconds.

    Delayed labels (``label_delay`` seconds, see :mod:`producers.labels`):
    each event with an event id and a label is sent with its label set to
    ``None``, and the label goes to ``labels_topic`` (default: the namespace's
    labels topic, which must exist) after a delay drawn uniformly from
    ``[0, label_delay]`` with ``random.Random(label_seed)``; a fraction
    ``label_duplicates`` of the labels is sent twice. Labels are sent as they
    come due while events are produced; after the last event the run waits
    for the rest (at most ``label_delay``). Invalid label options raise
    :class:`ConfigError`, a missing labels topic :class:`KafkaClientError`,
    both before anything is sent.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    check_label_options(label_delay, label_duplicates)
    if label_delay is not None:
        labels_topic = labels_topic or Topics.from_settings(settings).labels
        _check_labels_topic(settings, labels_topic)
    pacer = Pacer(rate, clock=clock) if rate else None
    started = clock()
    next_progress = started + progress_interval
    labels: LabelProducer | None = None
    with ExitStack() as stack:
        producer = stack.enter_context(EventProducer(settings, topic=topic, schema=source.schema))
        if label_delay is not None:
            # Entered after the event producer, so left before it: on an error,
            # the labels of events already sent are still sent (at once).
            labels = stack.enter_context(
                LabelProducer(
                    settings,
                    max_delay=label_delay,
                    duplicates=label_duplicates,
                    seed=label_seed,
                    topic=labels_topic,
                    clock=clock,
                )
            )
        for row, item in enumerate(islice(source, limit), start=1):
            if pacer is not None:
                _wait(producer, pacer.delay(), clock, labels)
            detached: DetachedLabel | None = None
            if labels is not None:
                item, detached = detach_label(item, settings.label_field)
            if isinstance(item, RawPayload):
                producer.send_raw(item.value, key=item.key, headers=item.headers)
            else:
                try:
                    producer.send(item)
                except RecordError as exc:
                    if exc.row is not None:
                        raise
                    raise RecordError(exc.reason, row=row, field=exc.field) from exc
            if labels is not None:
                # Scheduled only once its event was accepted: a row that does
                # not fit the schema leaves no label behind.
                if detached is not None:
                    labels.schedule(detached)
                labels.release()
            if on_progress is not None and clock() >= next_progress:
                next_progress = clock() + progress_interval
                on_progress(_report(source, producer.topic, producer.stats, clock() - started, labels=labels))
        stats = producer.flush(flush_timeout)
        events_elapsed = clock() - started
        if labels is not None:
            labels.drain(flush_timeout)
    report = _report(source, producer.topic, stats, clock() - started, labels=labels, events_elapsed=events_elapsed)
    if on_progress is not None:
        on_progress(report)
    logger.info("%s: %s", source.name, report.summary())
    return report


def _wait(
    producer: EventProducer, seconds: float, clock: Callable[[], float], labels: LabelProducer | None = None
) -> None:
    """Wait ``seconds`` while serving delivery reports (``poll`` returns early on one).

    Labels that come due meanwhile are sent on time, not after the wait.
    """
    until = clock() + seconds
    while True:
        now = clock()
        if labels is not None:
            labels.release(now)
        left = until - now
        # Below a millisecond librdkafka would not wait at all; the pacer's
        # schedule absorbs the difference on the next event.
        if left < 0.001:
            return
        next_due = labels.next_due if labels is not None else None
        if next_due is not None:
            left = min(left, max(next_due - now, 0.001))
        producer.poll(left)


def _check_labels_topic(settings: Settings, topic: str) -> None:
    """Fail fast if the labels topic is missing; warn if it cannot be co-partitioned with the join's features."""
    cluster = Cluster(settings)
    by_event = cluster.topics.features_by_event
    counts = cluster.partition_counts([topic, by_event])
    if topic not in counts:
        raise KafkaClientError(f"topic {topic} does not exist; create it with 'streamml topics create'")
    if by_event in counts and counts[by_event] != counts[topic]:
        # murmur2 picks a partition modulo the count: with different counts a
        # label and its features land on different partition numbers.
        logger.warning(
            "%s has %d partitions but %s has %d: labels will not meet their features",
            topic, counts[topic], by_event, counts[by_event],
        )


def _report(
    source: EventSource,
    topic: str,
    stats: ProducerStats,
    elapsed: float,
    *,
    labels: LabelProducer | None = None,
    events_elapsed: float | None = None,
) -> ProduceReport:
    injected = dict(source.injected)
    rate_elapsed = elapsed if events_elapsed is None else events_elapsed
    label_stats = labels.stats if labels is not None else None
    return ProduceReport(
        source=source.name,
        topic=topic,
        sent=stats.sent,
        delivered=stats.delivered,
        failed=stats.failed,
        injected_bad=sum(injected.values()),
        elapsed=elapsed,
        rate=stats.sent / rate_elapsed if rate_elapsed > 0 else 0.0,
        bytes=stats.bytes,
        injected=injected,
        failures=stats.failures + (label_stats.failures if label_stats is not None else ()),
        labels_topic=labels.topic if labels is not None else "",
        labels_sent=label_stats.sent if label_stats is not None else 0,
        labels_delivered=label_stats.delivered if label_stats is not None else 0,
        labels_failed=label_stats.failed if label_stats is not None else 0,
        label_duplicates=labels.duplicates_sent if labels is not None else 0,
    )


def open_source(
    spec: str,
    settings: Settings,
    *,
    length: int | None = None,
    seed: int = 42,
    bad_fraction: float = 0.0,
    chunk_size: int | None = None,
) -> EventSource:
    """Return the source a spec names: ``synthetic`` or a ``.csv``/``.jsonl``/``.parquet`` path.

    Records follow the schema at ``settings.schema_path``. ``length``, ``seed``
    and ``bad_fraction`` configure the synthetic source (``length`` defaults to
    10,000; the drift is at half of it); fault injection is synthetic-only.
    Raises :class:`SourceError` for an unknown extension or an unreadable file.
    """
    schema = AvroSchema.from_file(settings.schema_path)
    if spec == "synthetic":
        return SyntheticSource(
            length or DEFAULT_LENGTH, seed=seed, bad_fraction=bad_fraction, schema=schema
        )
    path = Path(spec)
    source_class = FILE_SOURCES.get(path.suffix.lower())
    if source_class is None:
        known = ", ".join(sorted(FILE_SOURCES))
        raise SourceError(f"unknown source {spec!r}: expected 'synthetic' or a file ending in {known}")
    if bad_fraction:
        raise SourceError("bad_fraction applies to the synthetic source only; files are sent as they are")
    if chunk_size is None:
        return source_class(path, schema)
    return source_class(path, schema, chunk_size=chunk_size)
