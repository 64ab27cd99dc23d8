"""The sampler behind ``streamml monitor``, and the pipeline-wide Prometheus metrics it exports.

:class:`Sampler` looks at the pipeline every ``interval`` seconds on a daemon
thread: consumer lag of every group (:func:`streamml.lag.observe_lag`, rated by
a :class:`~streamml.lag_status.LagEvaluator`) and the pipeline's topics
(:class:`~streamml_cli.orchestration.monitor.PipelineMonitor`). Each read goes
through :class:`~streamml_cli.orchestration.bounded.BoundedCalls`, so a broker
that does not answer costs one bound, never a hung monitor; lag it could not
read is *unknown* (status ERROR), never 0.

:class:`MonitorCollector` renders the newest sample as Prometheus metrics at
scrape time, so a group or partition that is gone is gone from ``/metrics``
too. Every family is listed in :data:`METRIC_FAMILIES` (and its sample names in
:data:`METRIC_NAMES`, for the compose/Grafana check); ``docs/monitor.md``
describes each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamml.lag import GroupLag
from streamml.lag_status import GroupStatus, LagEvaluator, LagStatus
from streamml.metrics_http import sample_names
from streamml_cli.orchestration.monitor import PipelineSnapshot
from streamml_cli.orchestration.monitor_series import Sample, SampleRing

__all__ = ["Sampler", "MonitorCollector", "METRIC_FAMILIES", "METRIC_NAMES", "ACCURACY_VERSIONS"]

logger = logging.getLogger(__name__)

_PREFIX = "streamml_monitor_"
#: name -> Prometheus type of every family :class:`MonitorCollector` can export.
METRIC_FAMILIES: dict[str, str] = {
    _PREFIX + "lag_records": "gauge",
    _PREFIX + "lag_seconds": "gauge",
    _PREFIX + "group_lag_records": "gauge",
    _PREFIX + "group_lag_seconds": "gauge",
    _PREFIX + "group_status": "gauge",
    _PREFIX + "group_severity": "gauge",
    _PREFIX + "partition_status": "gauge",
    _PREFIX + "topic_records": "counter",
    _PREFIX + "dead_letters": "counter",
    _PREFIX + "model_versions": "counter",
    _PREFIX + "model_latest_version": "gauge",
    _PREFIX + "model_serving_version": "gauge",
    _PREFIX + "version_accuracy": "gauge",
    _PREFIX + "rolling_accuracy": "gauge",
    _PREFIX + "drift_psi": "gauge",
    _PREFIX + "drift_alerts": "counter",
    _PREFIX + "up": "gauge",
    _PREFIX + "samples": "counter",
    _PREFIX + "sample_errors": "counter",
    _PREFIX + "sample_seconds": "gauge",
}
METRIC_NAMES = sample_names(METRIC_FAMILIES)
#: Versions whose accuracy is exported (the newest that made predictions): a version label, but a bounded one.
ACCURACY_VERSIONS = 10


class MonitorCollector(Collector):
    """Prometheus metrics from ``ring``'s newest sample (``model``: the model name label)."""

    def __init__(self, ring: SampleRing, model: str) -> None:
        self._ring = ring
        self._model = model

    def collect(self) -> Iterator[Metric]:
        latest = self._ring.latest
        taken, failed, seconds = self._ring.counts
        yield _gauge("up", "1 when the newest sample read both the lag and the topics, else 0",
                     [([], float(latest is not None and not latest.errors))])
        yield _counter("samples", "samples taken", [([], taken)])
        yield _counter("sample_errors", "samples in which a read of the broker failed or overran its bound",
                       [([], failed)])
        yield _gauge("sample_seconds", "time the newest sample took", [([], seconds)])
        if latest is not None:
            yield from _lag_metrics(latest.statuses)
        snapshot = self._ring.latest_snapshot()
        if snapshot is not None:
            yield from _topic_metrics(snapshot, self._model)


def _lag_metrics(statuses: list[GroupStatus]) -> Iterator[Metric]:
    names = [s.name for s in LagStatus]
    known = [s for s in statuses if s.total_lag is not None]  # an unknown lag is absent, never 0
    parts = [p for s in known for p in s.partitions]
    yield _gauge("lag_records", "records a group has not consumed, per partition",
                 [([p.group, p.topic, str(p.partition)], p.lag) for p in parts], ["group", "topic", "partition"])
    yield _gauge("lag_seconds", "age of the oldest record a group has not consumed, per partition (0: caught up)",
                 [([p.group, p.topic, str(p.partition)], p.lag_seconds) for p in parts if p.lag_seconds is not None],
                 ["group", "topic", "partition"])
    yield _gauge("group_lag_records", "records a group has not consumed, over its partitions",
                 [([s.group], s.total_lag) for s in statuses if s.total_lag is not None], ["group"])
    yield _gauge("group_lag_seconds", "age of the oldest record a group has not consumed",
                 [([s.group], s.max_lag_seconds) for s in known if s.max_lag_seconds is not None], ["group"])
    yield _gauge("group_status", "1 for the group's current lag status (OK, WARNING, STALLED, STOPPED, ERROR), "
                 "0 for the others", [([s.group, n], float(s.status.name == n)) for s in statuses for n in names],
                 ["group", "status"])
    yield _gauge("group_severity", "the group's lag status as a number: 0 OK, 1 WARNING, 2 STALLED, 3 STOPPED, "
                 "4 ERROR", [([s.group], s.status.severity) for s in statuses], ["group"])
    yield _gauge("partition_status", "1 for the partition's current lag status, 0 for the others",
                 [([p.group, p.topic, str(p.partition), n], float(p.status.name == n)) for p in parts for n in names],
                 ["group", "topic", "partition", "status"])


def _topic_metrics(snapshot: PipelineSnapshot, model: str) -> Iterator[Metric]:
    yield _counter("topic_records", "records written to each pipeline topic (log-end offsets summed; "
                   "throughput: rate())", [([t], n) for t, n in sorted(snapshot.ends.items())], ["topic"])
    yield _counter("dead_letters", "quarantined events on the dead-letter topic, by the rule that rejected them",
                   [([r], n) for r, n in sorted(snapshot.quarantine_rules.items())], ["reason"])
    yield _counter("model_versions", "model versions published on the models topic",
                   [([model], len(snapshot.versions))], ["model"])
    latest = snapshot.latest
    yield _gauge("model_latest_version", "newest version published on the models topic",
                 [([model], latest.version)] if latest else [], ["model"])
    serving = max(snapshot.first_scored_at, key=lambda v: (snapshot.first_scored_at[v], v), default=None)
    yield _gauge("model_serving_version", "version that began serving last, as the predictions topic shows",
                 [([model], serving)] if serving is not None else [], ["model"])
    newest = sorted(v for v in snapshot.versions_labelled if snapshot.versions_labelled[v])[-ACCURACY_VERSIONS:]
    yield _gauge("version_accuracy", "share of a version's labelled predictions that were right, as the app "
                 f"measured it (the newest {ACCURACY_VERSIONS} versions)",
                 [([model, str(v)], snapshot.versions_correct[v] / snapshot.versions_labelled[v]) for v in newest],
                 ["model", "version"])
    yield _gauge("rolling_accuracy", "accuracy of the app's last 1,000 labelled predictions",
                 [([model], snapshot.scorer_rolling)] if snapshot.scorer_rolling is not None else [], ["model"])
    psi = snapshot.drift[-1].psi if snapshot.drift else {}
    yield _gauge("drift_psi", "population stability index of each field in the newest monitoring window",
                 [([f], v) for f, v in sorted(psi.items())], ["field"])
    alerts: dict[tuple[str, str], int] = {}
    for alert in snapshot.alerts:
        alerts[(alert.field, alert.rule)] = alerts.get((alert.field, alert.rule), 0) + 1
    yield _counter("drift_alerts", "alerts of the distribution monitor's windows, by field and rule (psi: drift)",
                   [([f, r], n) for (f, r), n in sorted(alerts.items())], ["field", "rule"])


def _gauge(name: str, doc: str, rows: list[tuple[list[str], float]], labels: list[str] | None = None) -> Metric:
    family = GaugeMetricFamily(_PREFIX + name, doc, labels=labels or [])
    for values, value in rows:
        family.add_metric(values, float(value))
    return family


def _counter(name: str, doc: str, rows: list[tuple[list[str], float]], labels: list[str] | None = None) -> Metric:
    family = CounterMetricFamily(_PREFIX + name, doc, labels=labels or [])
    for values, value in rows:
        family.add_metric(values, float(value))
    return family


class Sampler:
    """Adds a :class:`Sample` to ``ring`` every ``interval`` seconds, on a daemon thread.

    ``read_lag`` returns every group's lag (a group it could not read as
    :meth:`GroupLag.unknown`); ``read_topics`` the topics' snapshot;
    ``unknown`` the groups to report as unknown when ``read_lag`` itself
    fails or overruns. Each read must return within its own bound
    (:func:`streamml_cli.orchestration.monitor_readers.broker_readers`
    makes such readers).
    Nothing a read raises stops the thread: it becomes the sample's error.
    """

    def __init__(
        self,
        ring: SampleRing,
        *,
        read_lag: Callable[[], list[GroupLag]],
        read_topics: Callable[[], PipelineSnapshot],
        unknown: list[str],
        evaluator: LagEvaluator | None = None,
        interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval: must be more than 0 seconds, got {interval:g}")
        self.ring = ring
        self.interval = interval
        self._read_lag = read_lag
        self._read_topics = read_topics
        self._unknown = unknown
        self._evaluator = evaluator or LagEvaluator()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._statuses: dict[str, LagStatus] = {}
        self._last_errors: tuple[str, ...] = ()

    def sample(self) -> Sample:
        """Take one sample now, add it to the ring and return it."""
        started = time.monotonic()
        at = self._clock()
        # The two reads run side by side: a broker that does not answer costs one bound per sample, not two.
        topics: dict[str, Any] = {}
        reader = threading.Thread(target=self._topics_into, args=(topics,), name="streamml-monitor-topics",
                                  daemon=True)
        reader.start()
        errors: list[str] = []
        try:
            lag = self._read_lag()
        except Exception as exc:  # a stalled or failed probe: the lag is unknown, the monitor goes on
            errors.append(f"lag: {exc}")
            lag = [GroupLag.unknown(group, str(exc)) for group in self._unknown]
        if not errors:  # observe_lag's own unknown groups: one line per cause, not per group
            errors += [f"lag: {cause}" for cause in sorted({str(g.error) for g in lag if not g.known})]
        statuses = self._evaluator.observe(lag, at)
        reader.join()  # the read is bounded (see the class docstring)
        snapshot: PipelineSnapshot | None = topics.get("snapshot")
        if "error" in topics:  # the series show a gap; the next sample tries again
            errors.append(f"topics: {topics['error']}")
        sample = Sample(at, lag, statuses, snapshot, tuple(errors))
        self.ring.add(sample, time.monotonic() - started)
        self._log_changes(sample)
        return sample

    def _topics_into(self, box: dict[str, Any]) -> None:
        try:
            box["snapshot"] = self._read_topics()
        except Exception as exc:  # handed to sample(), which records it
            box["error"] = exc

    def _log_changes(self, sample: Sample) -> None:
        """One line per lag status change and per new kind of failure (not one per sample)."""
        for status in sample.statuses:
            before = self._statuses.get(status.group)
            if before is not status.status:
                level = logging.INFO if status.status is LagStatus.OK else logging.WARNING
                logger.log(level, "lag status of %s: %s (was %s): %s", status.group, status.status.value,
                           before.value if before else "none", status.reason,
                           extra={"event": "lag_status", "group": status.group, "status": status.status.value,
                                  "previous": before.value if before else None})
                self._statuses[status.group] = status.status
        if sample.errors and sample.errors != self._last_errors:
            logger.warning("monitor sample incomplete: %s", "; ".join(sample.errors))
        self._last_errors = sample.errors

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a bug in a sample must not end the monitor's thread silently
                logger.exception("monitor sample failed")
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    @property
    def alive(self) -> bool:
        """Whether the sampling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Sampler:
        """Start sampling (the first sample at once); returns ``self``."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="streamml-monitor-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current sample (waiting at most ``timeout`` seconds for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
