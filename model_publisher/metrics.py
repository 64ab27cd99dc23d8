"""Prometheus metrics of one online learner.

:class:`LearnerMetrics` owns a :class:`~prometheus_client.CollectorRegistry`
(never the global one). The event counts are read at scrape time from the
loop's :class:`~model_publisher.learning_loop.LearnReport`, which the loop
keeps anyway: the learn path pays nothing for them, and the two cannot drift
apart. Each publish updates the rest (:meth:`LearnerMetrics.published`): the
version, the gate's decision, the publish time, the payload size and the
progressive-validation metrics the version was published with. Serve it
with :class:`streamml.metrics_http.MetricsExporter`; every name is listed in
:data:`METRIC_NAMES` and ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from streamml.envelope import ModelEnvelope
from streamml.metrics_http import sample_names

__all__ = ["LearnerMetrics", "METRIC_FAMILIES", "METRIC_NAMES", "DECISIONS"]

#: ``name -> type`` of every family a learner exports.
METRIC_FAMILIES = {
    "streamml_learner_events_consumed": "counter",
    "streamml_learner_events_learned": "counter",
    "streamml_learner_events_not_learned": "counter",
    "streamml_learner_versions_published": "counter",
    "streamml_learner_model_version": "gauge",
    "streamml_learner_model_metric": "gauge",
    "streamml_learner_model_bytes": "gauge",
    "streamml_learner_publish_seconds": "histogram",
}
#: Every sample name a learner's scrape can show (what a dashboard may query).
METRIC_NAMES = sample_names(METRIC_FAMILIES)
#: Values of the ``decision`` label: the gate promoted it, held it back, or no gate ran.
DECISIONS = ("promoted", "held_back", "ungated")

#: Signing and sending a model of a few KB to a few MB: milliseconds to seconds.
_PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: LearnReport field -> ``reason`` label of the records consumed but not learned.
_NOT_LEARNED = {"skipped": "unlearnable", "refused": "model_output", "duplicates": "duplicate"}


class _ReportCollector(Collector):
    """Counts of a LearnReport, read when Prometheus scrapes."""

    def __init__(self, report: Any) -> None:
        self._report = report

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        report = self._report
        consumed = CounterMetricFamily("streamml_learner_events_consumed", "Feature records consumed")
        consumed.add_metric([], float(report.consumed))
        yield consumed
        learned = CounterMetricFamily("streamml_learner_events_learned", "Labelled events learned (test-then-train)")
        learned.add_metric([], float(report.learned))
        yield learned
        not_learned = CounterMetricFamily(
            "streamml_learner_events_not_learned",
            "Records consumed but not learned: unlearnable or undecodable, a model's output, a duplicate",
            labels=["reason"],
        )
        for field, reason in _NOT_LEARNED.items():
            not_learned.add_metric([reason], float(getattr(report, field)))
        yield not_learned


class LearnerMetrics:
    """The metrics of one learner (see the module doc); :meth:`watch` it to a loop's report."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._published = Counter(
            "streamml_learner_versions_published", "Model versions published, by the quality gate's decision",
            ["model", "decision"], registry=r,
        )
        self._version = Gauge(
            "streamml_learner_model_version", "The newest version this learner published", ["model"], registry=r
        )
        self._metric = Gauge(
            "streamml_learner_model_metric",
            "A progressive-validation metric of the newest published version, by metric name",
            ["model", "metric"], registry=r,
        )
        self._bytes = Gauge(
            "streamml_learner_model_bytes", "Payload size of the newest published version", ["model"], registry=r
        )
        self._seconds = Histogram(
            "streamml_learner_publish_seconds", "Time to sign and deliver one version to the models topic",
            registry=r, buckets=_PUBLISH_BUCKETS,
        )
        self._watching = False

    def watch(self, report: Any) -> None:
        """Export ``report``'s counts (a LearnReport, or anything with its fields) at every scrape; once."""
        if not self._watching:
            self.registry.register(_ReportCollector(report))
            self._watching = True

    def published(self, envelope: ModelEnvelope, seconds: float, *, promoted: bool | None) -> None:
        """Count one published version; ``promoted`` is the gate's decision, ``None`` when no gate ran."""
        name = envelope.model_name
        decision = DECISIONS[2] if promoted is None else DECISIONS[0] if promoted else DECISIONS[1]
        self._published.labels(name, decision).inc()
        self._version.labels(name).set(envelope.version)
        self._bytes.labels(name).set(envelope.payload_size)
        self._seconds.observe(seconds)
        for metric, value in envelope.metrics.items():
            self._metric.labels(name, metric).set(float(value))
