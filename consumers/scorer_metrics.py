"""Prometheus metrics of one stream scorer.

:class:`ScorerMetrics` owns a :class:`~prometheus_client.CollectorRegistry`
(never the global one). Predictions and skipped records are read at scrape
time from the scorer's :class:`~consumers.scorer.ScoreReport` (the scoring
path pays nothing for them); each batch adds one observation to the batch
latency histogram; each swap adds its load time to the swap histogram. The
model's state (ready, version, age, swaps, refusals by reason) comes from
the subscriber through :class:`~consumers.serving_metrics.ModelCollector`,
the very collector ``streamml serve`` uses, so both export the same names.
Every name is listed in :data:`METRIC_NAMES` and ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from consumers.serving_metrics import MODEL_METRIC_FAMILIES, ModelCollector
from streamml.metrics_http import sample_names

__all__ = ["ScorerMetrics", "METRIC_FAMILIES", "METRIC_NAMES"]

#: ``name -> type`` of every family a scorer exports.
METRIC_FAMILIES = {
    "streamml_scorer_predictions": "counter",
    "streamml_scorer_skipped": "counter",
    "streamml_scorer_batch_seconds": "histogram",
    "streamml_scorer_batch_size": "histogram",
    "streamml_scorer_swap_seconds": "histogram",
    **MODEL_METRIC_FAMILIES,
}
#: Every sample name a scorer's scrape can show (what a dashboard may query).
METRIC_NAMES = sample_names(METRIC_FAMILIES)

#: A batch of up to 500 predictions: a millisecond to a few seconds (acks included).
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500)
#: Opening a model: verify, unpickle, replay golden examples.
_SWAP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ReportCollector(Collector):
    """A ScoreReport's counts, read when Prometheus scrapes."""

    def __init__(self, report: Any) -> None:
        self._report = report

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        predictions = CounterMetricFamily("streamml_scorer_predictions", "Predictions written to the predictions topic")
        predictions.add_metric([], float(self._report.scored))
        yield predictions
        skipped = CounterMetricFamily(
            "streamml_scorer_skipped", "Feature records not scored (undecodable, or the model raised on them)"
        )
        skipped.add_metric([], float(self._report.skipped))
        yield skipped


class ScorerMetrics:
    """The metrics of one scorer; the scorer calls :meth:`watch` with its report and subscriber."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._batch_seconds = Histogram(
            "streamml_scorer_batch_seconds",
            "Time to score a batch: decode, predict, encode, produce, wait for the acknowledgements",
            registry=self.registry, buckets=_BATCH_BUCKETS,
        )
        self._batch_size = Histogram(
            "streamml_scorer_batch_size", "Feature records per scored batch", registry=self.registry,
            buckets=_SIZE_BUCKETS,
        )
        self._swap_seconds = Histogram(
            "streamml_scorer_swap_seconds", "Time to open and install each new model version",
            registry=self.registry, buckets=_SWAP_BUCKETS,
        )
        self._watching = False

    def watch(self, report: Any, subscriber: Any) -> None:
        """Export ``report``'s counts and ``subscriber``'s model state at every scrape, and time its swaps; once."""
        if self._watching:
            return
        self._watching = True
        self.registry.register(_ReportCollector(report))
        self.registry.register(ModelCollector(subscriber))

        def swapped(_old: int | None, new: int, _envelope: dict[str, Any]) -> None:
            serving = subscriber.current()
            if serving.version == new:  # a newer swap in between would report its own time
                self._swap_seconds.observe(serving.load_seconds)

        subscriber.on_swap(swapped)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Count one scored batch of ``size`` records that took ``seconds``."""
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)
