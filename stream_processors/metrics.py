"""Prometheus metrics of one stream processor, and its quarantine-burst log line.

:class:`ProcessorMetrics` owns a :class:`~prometheus_client.CollectorRegistry`
(never the global one, so several processors can run in one process) and is
updated once per batch by :class:`~stream_processors.app.BatchHandler`: a
counter moves by the batch's count, not once per event. Drift scores come
from the monitoring records the batch produced (one per window), and the
label join's counts are read from the join when Prometheus scrapes. Serve it
with :class:`streamml.metrics_http.MetricsExporter`; every name is listed in
:data:`METRIC_NAMES` and ``docs/metrics.md``.

:class:`QuarantineBursts` logs one warning when a batch quarantines many of
its events (at most one line per ``every_seconds``), so a broken producer
shows as one line, not only as thousands of per-record info lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_processors.batches import BatchResult, SourceRecord
from streamml.metrics_http import sample_names
from streamml.monitoring import PROFILE, decode_record

__all__ = ["ProcessorMetrics", "QuarantineBursts", "METRIC_FAMILIES", "METRIC_NAMES"]

logger = logging.getLogger(__name__)

#: ``name -> type`` of every family a processor exports.
METRIC_FAMILIES = {
    "streamml_processor_events_consumed": "counter",
    "streamml_processor_events_featurized": "counter",
    "streamml_processor_dead_letters": "counter",
    "streamml_processor_batch_size": "histogram",
    "streamml_processor_batch_seconds": "histogram",
    "streamml_processor_drift_psi": "gauge",
    "streamml_processor_drifted_fields": "gauge",
    "streamml_processor_drift_windows": "counter",
    "streamml_processor_label_join": "counter",
}
#: Every sample name a processor's scrape can show (what a dashboard may query).
METRIC_NAMES = sample_names(METRIC_FAMILIES)

_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
#: A batch of a few hundred events takes milliseconds; a stall shows in the top buckets.
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _JoinCollector(Collector):
    """The label join's counts (``joined``, ``expired_unlabelled``...), read at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> list[Metric]:
        return []  # nothing to ask the join for at registration

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "streamml_processor_label_join", "Delayed-label join outcomes, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self._counts().items()):
            family.add_metric([outcome], float(count))
        yield family


class ProcessorMetrics:
    """The counters, histograms and gauges of one stream processor (see the module doc)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._consumed = Counter(
            "streamml_processor_events_consumed", "Raw events consumed, by source topic", ["topic"], registry=r
        )
        self._featurized = Counter(
            "streamml_processor_events_featurized", "Valid events sent on as feature vectors", registry=r
        )
        self._dead = Counter(
            "streamml_processor_dead_letters", "Events quarantined to the dead-letter topic, by rule", ["reason"],
            registry=r,
        )
        self._size = Histogram(
            "streamml_processor_batch_size", "Events per processed batch", registry=r, buckets=_SIZE_BUCKETS
        )
        self._seconds = Histogram(
            "streamml_processor_batch_seconds", "Time to process a batch and hand its outputs to the producer",
            registry=r, buckets=_SECONDS_BUCKETS,
        )
        self._psi = Gauge(
            "streamml_processor_drift_psi", "Population stability index of a field in the last closed window",
            ["field"], registry=r,
        )
        self._drifted = Gauge(
            "streamml_processor_drifted_fields", "Fields whose PSI reached the threshold in the last window",
            registry=r,
        )
        self._windows = Counter(
            "streamml_processor_drift_windows", "Monitoring windows closed and compared with the reference",
            registry=r,
        )
        # labels() takes a lock and builds a key per call: children are cached per topic and rule.
        self._consumed_by: dict[str, Any] = {}
        self._dead_by: dict[str, Any] = {}

    def observe_batch(self, topic: str, records: Sequence[SourceRecord], result: BatchResult, seconds: float) -> None:
        """Count one processed batch of ``records`` read from ``topic``, which took ``seconds``."""
        child = self._consumed_by.get(topic)
        if child is None:
            child = self._consumed_by[topic] = self._consumed.labels(topic)
        child.inc(len(records))
        self._featurized.inc(len(result.features))
        for rule, count in result.quarantined.items():
            dead = self._dead_by.get(rule)
            if dead is None:
                dead = self._dead_by[rule] = self._dead.labels(rule)
            dead.inc(count)
        self._size.observe(len(records))
        self._seconds.observe(seconds)
        for output in result.monitoring:  # one per closed window: decoding it here costs nothing per event
            self._observe_monitoring(output.value)

    def _observe_monitoring(self, value: bytes | None) -> None:
        try:
            record = decode_record(value)
        except Exception:  # noqa: BLE001 - metrics must never stop the data
            logger.debug("cannot read a monitoring record for the drift metrics", exc_info=True)
            return
        if record.kind != PROFILE:
            return
        self._windows.inc()
        for name, entry in record.fields.items():
            score = entry.get("psi")
            if isinstance(score, (int, float)):
                self._psi.labels(name).set(float(score))
        self._drifted.set(len(record.drifted))

    def watch_label_join(self, counts: Callable[[], dict[str, int]]) -> None:
        """Export the delayed-label join's counts, read from ``counts()`` at every scrape."""
        self.registry.register(_JoinCollector(counts))


class QuarantineBursts:
    """Log one warning when a batch quarantines at least ``min_events`` and ``min_share`` of its events.

    At most one line per ``every_seconds``; bursts in between are counted
    into the next line, so a producer sending garbage shows but never floods.
    """

    def __init__(
        self,
        *,
        min_events: int = 10,
        min_share: float = 0.1,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_events = min_events
        self.min_share = min_share
        self.every_seconds = every_seconds
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def observe(self, records: Sequence[SourceRecord], result: BatchResult) -> bool:
        """Log the batch if it is a burst and the last line is old enough; ``True`` if it logged."""
        quarantined = len(result.dead_letters)
        if quarantined < self.min_events or quarantined < self.min_share * len(records):
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.every_seconds:
            self._suppressed += 1
            return False
        self._last, suppressed, self._suppressed = now, self._suppressed, 0
        rules = dict(result.quarantined.most_common())
        first = result.dead_letters[0].source.position
        shown = ", ".join(f"{rule} {n}" for rule, n in rules.items())
        since = f"; {suppressed} more burst(s) since the last line" if suppressed else ""
        logger.warning(
            "quarantine burst: %d of %d events quarantined (%s), the first at %s%s",
            quarantined, len(records), shown, first, since,
            extra={
                "event": "quarantine_burst", "quarantined": quarantined, "events": len(records),
                "rules": rules, "record": first, "suppressed": suppressed,
            },
        )
        return True
