"""Drive a source into Kafka: ``produce()`` (optionally with delayed labels), and the source spec parser."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from contextlib import ExitStack
from itertools import islice
from pathlib import Path

from producers.app import EventProducer
from producers.events import EventSource, RawPayload
from producers.files import CsvSource, FileSource, JsonLinesSource, ParquetSource
from producers.labels import DetachedLabel, LabelProducer, check_label_options, detach_label
from producers.pacing import Pacer
from producers.rejections import ON_ERROR_POLICIES, OnError, RejectedRow, RowStopped, dead_letter, sent_before
from producers.report import ProduceReport, RowCounts, make_report
from producers.resume import DEFAULT_ID_COLUMN
from producers.rows import Row, at_row, numbered_rows, row_id
from producers.synthetic import DEFAULT_LENGTH, SyntheticSource
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError, RecordError, SourceError
from streamml.serde import AvroSchema
from streamml.topics import Topics

__all__ = ["ProduceReport", "produce", "open_source", "FILE_SOURCES"]

logger = logging.getLogger(__name__)

#: Client settings of a run's event producer, which is short-lived: the
#: connection to the broker the bootstrap server names is opened after
#: reconnect.backoff.ms / 2 (librdkafka's default: 50 ms) instead of 50 ms.
RUN_CLIENT_CONFIG = {"reconnect.backoff.ms": 20}
#: How long a run waits for the broker's metadata before its first record (see EventProducer.connect).
CONNECT_TIMEOUT = 2.0

#: File extension -> source class, for :func:`open_source`.
FILE_SOURCES = {
    ".csv": CsvSource,
    ".jsonl": JsonLinesSource,
    ".ndjson": JsonLinesSource,
    ".parquet": ParquetSource,
    ".pq": ParquetSource,
}


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
    on_error: OnError = "stop",
    on_rejected: Callable[[RejectedRow], None] | None = None,
    skip_ids: Collection[str] | None = None,
    id_column: str = DEFAULT_ID_COLUMN,
) -> ProduceReport:
    """Send up to ``limit`` rows of ``source`` at up to ``rate`` events/s, then flush.

    ``topic`` defaults to the pipeline's raw events topic. ``on_progress`` is
    called at most every ``progress_interval`` seconds, and once at the end.
    Delivery failures do not raise: check ``report.ok``. Raises
    :class:`KafkaClientError` if events are still undelivered after
    ``flush_timeout`` seconds.

    A row that does not fit the schema (row numbers are 1-based positions in
    the source) is handled by ``on_error`` (see :mod:`producers.rejections`):
    ``"stop"`` flushes and raises :class:`RowStopped` (a :class:`RecordError`)
    saying how many rows before it were acknowledged; ``"skip"`` leaves it
    out; ``"deadletter"`` sends it to the namespace's dead-letter topic (which
    must exist) with its reason. ``on_rejected`` is called with each row
    skipped or dead-lettered. ``skip_ids``: rows whose ``id_column`` value
    (as text) is in it are not sent (resuming, see :mod:`producers.resume`).

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
    if on_error not in ON_ERROR_POLICIES:
        raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
    check_label_options(label_delay, label_duplicates)
    if label_delay is not None:
        labels_topic = labels_topic or Topics.from_settings(settings).labels
        _check_labels_topic(settings, labels_topic)
    pacer = Pacer(rate, clock=clock) if rate else None
    started = clock()
    next_progress = started + progress_interval
    labels: LabelProducer | None = None
    dead: EventProducer | None = None
    counts = RowCounts()
    with ExitStack() as stack:
        producer = stack.enter_context(
            EventProducer(settings, topic=topic, schema=source.schema, client_config=RUN_CLIENT_CONFIG)
        )
        # Without it the first records wait 0.5 s for the producer id (idempotence).
        producer.connect(min(CONNECT_TIMEOUT, flush_timeout))
        if on_error == "deadletter":
            dead_topic = Topics.from_settings(settings).dead_letters
            dead = stack.enter_context(EventProducer(settings, topic=dead_topic, schema=source.schema))
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
        for row in islice(numbered_rows(source), limit):
            counts.rows += 1
            if skip_ids is not None and row.error is None and row_id(row.item, id_column) in skip_ids:
                counts.already_on_topic += 1
                continue
            if pacer is not None:
                _wait(producer, pacer.delay(), clock, labels)
            rejected = _send(producer, labels, row, settings.label_field)
            if rejected is not None:
                if on_error == "stop":
                    raise _stopped(producer, rejected, counts, flush_timeout)
                if dead is None:
                    counts.skipped += 1
                else:
                    _send_dead_letter(dead, rejected, source, settings.key_field)
                    counts.dead_lettered += 1
                if on_rejected is not None:
                    on_rejected(rejected)
            if on_progress is not None and clock() >= next_progress:
                next_progress = clock() + progress_interval
                on_progress(
                    make_report(source, producer.topic, producer.stats, clock() - started, labels=labels, counts=counts)
                )
        stats = producer.flush(flush_timeout)
        dead_stats = None if dead is None else (dead.topic, dead.flush(flush_timeout))
        events_elapsed = clock() - started
        if labels is not None:
            labels.drain(flush_timeout)
    report = make_report(
        source, producer.topic, stats, clock() - started,
        labels=labels, events_elapsed=events_elapsed, counts=counts, dead_letters=dead_stats,
    )
    if on_progress is not None:
        on_progress(report)
    logger.info("%s: %s", source.name, report.summary())
    return report


def _send(producer: EventProducer, labels: LabelProducer | None, row: Row, label_field: str) -> RejectedRow | None:
    """Send one row (and schedule its delayed label); return it rejected if it does not fit the schema."""
    if row.error is not None:
        return RejectedRow(row.number, row.error, "coercion", row.raw)
    item = row.item
    assert item is not None  # a row without an error has its item
    detached: DetachedLabel | None = None
    if labels is not None:
        item, detached = detach_label(item, label_field)
    if isinstance(item, RawPayload):
        producer.send_raw(item.value, key=item.key, headers=item.headers)
    else:
        try:
            producer.send(item)
        except RecordError as exc:
            return RejectedRow(row.number, at_row(exc, row.number), "encoding", row.raw)
    if labels is not None:
        # Scheduled only once its event was accepted: a row that does
        # not fit the schema leaves no label behind.
        if detached is not None:
            labels.schedule(detached)
        labels.release()
    return None


def _stopped(producer: EventProducer, rejected: RejectedRow, counts: RowCounts, timeout: float) -> RowStopped:
    """The error that ends a run at ``rejected``, once the rows before it are flushed (so its count is true)."""
    unconfirmed = ""
    try:
        stats = producer.flush(timeout)
    except KafkaClientError as exc:
        stats, unconfirmed = producer.stats, str(exc)
    accounting = sent_before(
        rejected.row,
        delivered=stats.delivered,
        failed=stats.failed,
        already_on_topic=counts.already_on_topic,
        skipped=counts.skipped,
        dead_lettered=counts.dead_lettered,
        unconfirmed=unconfirmed,
    )
    return RowStopped(rejected.error, accounting, acknowledged=stats.delivered)


def _send_dead_letter(dead: EventProducer, rejected: RejectedRow, source: EventSource, key_field: str) -> None:
    file = str(source.path) if isinstance(source, FileSource) else source.name
    value, key, headers = dead_letter(
        rejected, source=source.name, file=file, key_field=key_field, now_ms=int(time.time() * 1000)
    )
    dead.send_raw(value, key=key, headers=headers)


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
