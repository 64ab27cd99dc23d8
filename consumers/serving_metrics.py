"""Prometheus metrics of one :class:`~consumers.http_service.ModelServer`.

Each server owns a :class:`prometheus_client.CollectorRegistry`, so several
servers in one process (tests, an app serving two models) keep separate
counts instead of colliding in the global registry.

Request metrics are counted as requests happen. The model metrics (version,
swaps, refusals, age) are read from the model source at scrape time by a
custom collector: the source already counts swaps and refusals, and counting
them a second time here could only drift from its numbers.

Every name and label is listed in ``docs/serving.md``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from consumers.swap import ServingModel
from streamml.errors import ModelNotReadyError
from streamml.metrics_http import sample_names

__all__ = [
    "ServingMetrics", "ModelCollector", "CONTENT_TYPE", "ENDPOINTS", "MODEL_METRIC_FAMILIES", "METRIC_FAMILIES",
    "METRIC_NAMES",
]

#: ``name -> type`` of the model families :class:`ModelCollector` exports (serve and the stream scorer).
MODEL_METRIC_FAMILIES = {
    "streamml_model_ready": "gauge",
    "streamml_model_version": "gauge",
    "streamml_model_age_seconds": "gauge",
    "streamml_model_load_seconds": "gauge",
    "streamml_model_topic_position": "gauge",
    "streamml_model_topic_lag": "gauge",
    "streamml_model_swaps": "counter",
    "streamml_model_refused": "counter",
}
#: ``name -> type`` of every family ``streamml serve`` exports.
METRIC_FAMILIES = {
    "streamml_serve_requests": "counter",
    "streamml_serve_request_seconds": "histogram",
    "streamml_serve_predictions": "counter",
    **MODEL_METRIC_FAMILIES,
}
#: Every sample name a scrape of ``streamml serve`` can show (what a dashboard may query).
METRIC_NAMES = sample_names(METRIC_FAMILIES)

#: The ``Content-Type`` of :meth:`ServingMetrics.render`'s text.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Paths counted under their own ``endpoint`` label; every other path is ``other``,
#: so a scanner probing random URLs cannot grow the label set without bound.
ENDPOINTS = frozenset({"/predict", "/model", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})

#: Request durations of a CPU-light JSON API: sub-millisecond to a few seconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ModelCollector(Collector):
    """The serving model's state, read from ``source`` when Prometheus scrapes.

    ``source`` is a :class:`~consumers.subscriber.ModelSubscriber` or a
    :class:`~consumers.swap.ModelSlot`; shared by serve and the stream scorer.
    """

    def __init__(self, source: Any) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        # Nothing to describe up front: without describe(), registering would call collect(),
        # and a source that is not ready yet must not be asked for its model at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        source = self._source
        try:
            serving: ServingModel | None = source.current()
        except ModelNotReadyError:
            serving = None
        ready = GaugeMetricFamily("streamml_model_ready", "1 once a verified model serves, else 0")
        ready.add_metric([], 0.0 if serving is None else 1.0)
        yield ready
        if serving is not None:
            name = str(serving.envelope.get("model_name", ""))
            version = GaugeMetricFamily("streamml_model_version", "The serving model version", labels=["model"])
            version.add_metric([name], float(serving.version))
            yield version
            created_ms = serving.envelope.get("created_at")
            if isinstance(created_ms, (int, float)):
                age = GaugeMetricFamily(
                    "streamml_model_age_seconds", "Seconds since the serving version was created", labels=["model"]
                )
                age.add_metric([name], max(0.0, time.time() - created_ms / 1000))
                yield age
            load = GaugeMetricFamily(
                "streamml_model_load_seconds", "Seconds the serving version took to open and install", labels=["model"]
            )
            load.add_metric([name], serving.load_seconds)
            yield load
        position = getattr(source, "models_topic_position", None)
        if isinstance(position, tuple):
            at, end = position
            where = GaugeMetricFamily(
                "streamml_model_topic_position", "Next models-topic offset this subscriber reads (it commits none)"
            )
            where.add_metric([], float(at))
            yield where
            lag = GaugeMetricFamily(
                "streamml_model_topic_lag", "Models-topic records this subscriber has not read yet (end - position)"
            )
            lag.add_metric([], float(max(0, end - at)))
            yield lag
        swaps = getattr(source, "swaps", None)
        if isinstance(swaps, int):
            family = CounterMetricFamily("streamml_model_swaps", "Models installed so far (the first load counts)")
            family.add_metric([], float(swaps))
            yield family
        # ModelSubscriber says refused_by_reason; a bare ModelSlot keeps the same counts as refused_by_kind.
        refused = getattr(source, "refused_by_reason", None)
        if refused is None:
            refused = getattr(source, "refused_by_kind", None)
        if isinstance(refused, Mapping):
            family = CounterMetricFamily(
                "streamml_model_refused", "Models-topic records not loaded, by kind of reason", labels=["reason"]
            )
            for reason, count in sorted(refused.items()):
                family.add_metric([str(reason)], float(count))
            yield family


class ServingMetrics:
    """The request counters of one server, and its registry (model metrics included)."""

    def __init__(self, source: Any) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "streamml_serve_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "streamml_serve_request_seconds",
            "Time from request to the end of the answer, by endpoint",
            ["endpoint"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self._predictions = Counter(
            "streamml_serve_predictions", "Rows predicted (a batch of n counts n)", registry=self.registry
        )
        self.registry.register(ModelCollector(source))
        # labels() takes a lock and builds a key on every call; the children are cached per label
        # set instead, since observe() runs on every request.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request to ``path`` with ``status``, taking ``seconds``."""
        endpoint = path if path in ENDPOINTS else "other"
        key = (endpoint, status)
        children = self._children.get(key)
        if children is None:
            children = (self._requests.labels(endpoint, str(status)), self._seconds.labels(endpoint))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def predicted(self, rows: int) -> None:
        """Count ``rows`` predictions made."""
        self._predictions.inc(rows)

    def render(self) -> bytes:
        """Everything in the Prometheus text format (see :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
