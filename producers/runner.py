"""Drive a source into Kafka: ``produce()``, and the source spec parser behind the CLI."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from producers.app import EventProducer, ProducerStats
from producers.events import EventSource, RawPayload
from producers.files import CsvSource, JsonLinesSource, ParquetSource
from producers.pacing import Pacer
from producers.synthetic import DEFAULT_LENGTH, SyntheticSource
from streamml.config import Settings
from streamml.errors import RecordError, SourceError
from streamml.serde import AvroSchema

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
    #: Achieved rate, events sent per second.
    rate: float
    bytes: int = 0
    injected: Mapping[str, int] = field(default_factory=dict)
    #: The first few delivery failure reasons.
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every sent event was delivered."""
        return self.failed == 0 and self.delivered == self.sent

    def summary(self) -> str:
        """One line for a terminal or log."""
        bad = f", {self.injected_bad} deliberately bad" if self.injected_bad else ""
        failed = f", {self.failed} FAILED" if self.failed else ""
        return (
            f"{self.sent} events sent to {self.topic}, {self.delivered} delivered{failed}{bad} "
            f"in {self.elapsed:.1f}s ({self.rate:,.0f} events/s, {self.bytes / 1e6:.1f} MB)"
        )


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
) -> ProduceReport:
    """Send up to ``limit`` events of ``source`` at up to ``rate`` events/s, then flush.

    ``topic`` defaults to the pipeline's raw events topic. ``on_progress`` is
    called at most every ``progress_interval`` seconds, and once at the end.
    A row that does not fit the schema stops the run with :class:`RecordError`
    (its row number is the 1-based position in the source); events sent before
    it are still flushed. Delivery failures do not raise: check ``report.ok``.
    Raises :class:`KafkaClientError` if events are still undelivered after
    ``flush_timeout`` seconds.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    pacer = Pacer(rate, clock=clock) if rate else None
    started = clock()
    next_progress = started + progress_interval
    with EventProducer(settings, topic=topic, schema=source.schema) as producer:
        for row, item in enumerate(islice(source, limit), start=1):
            if pacer is not None:
                _wait(producer, pacer.delay(), clock)
            if isinstance(item, RawPayload):
                producer.send_raw(item.value, key=item.key, headers=item.headers)
            else:
                try:
                    producer.send(item)
                except RecordError as exc:
                    if exc.row is not None:
                        raise
                    raise RecordError(exc.reason, row=row, field=exc.field) from exc
            if on_progress is not None and clock() >= next_progress:
                next_progress = clock() + progress_interval
                on_progress(_report(source, producer.topic, producer.stats, clock() - started))
        stats = producer.flush(flush_timeout)
    report = _report(source, producer.topic, stats, clock() - started)
    if on_progress is not None:
        on_progress(report)
    logger.info("%s: %s", source.name, report.summary())
    return report


def _wait(producer: EventProducer, seconds: float, clock: Callable[[], float]) -> None:
    """Wait ``seconds`` while serving delivery reports (``poll`` returns early on one)."""
    until = clock() + seconds
    # Below a millisecond librdkafka would not wait at all; the pacer's
    # schedule absorbs the difference on the next event.
    while (left := until - clock()) >= 0.001:
        producer.poll(left)


def _report(source: EventSource, topic: str, stats: ProducerStats, elapsed: float) -> ProduceReport:
    injected = dict(source.injected)
    return ProduceReport(
        source=source.name,
        topic=topic,
        sent=stats.sent,
        delivered=stats.delivered,
        failed=stats.failed,
        injected_bad=sum(injected.values()),
        elapsed=elapsed,
        rate=stats.sent / elapsed if elapsed > 0 else 0.0,
        bytes=stats.bytes,
        injected=injected,
        failures=stats.failures,
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
