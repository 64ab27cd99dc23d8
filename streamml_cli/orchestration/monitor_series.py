"""What ``streamml monitor`` remembers: a bounded ring of samples, and the time series the dashboard draws.

A :class:`Sample` is one look at the pipeline: consumer lag per group (with
the lag evaluator's verdict) and the :class:`PipelineSnapshot` of its topics.
Either can be missing from a sample (the broker did not answer in time): a
missing value is ``None`` in every series, drawn as a gap, never as 0.

:class:`SampleRing` keeps the newest samples (600 by default: 20 minutes at
the default 2 s interval) and turns them into the JSON of ``/api/snapshot``
(:meth:`SampleRing.series`); ``docs/monitor.md`` describes its fields. Pure:
no broker, no clock, no threads other than the lock that lets the sampler
add while the web server reads.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from streamml.lag import GroupLag
from streamml.lag_status import GroupStatus
from streamml_cli.orchestration.monitor import PipelineSnapshot

__all__ = ["Sample", "SampleRing", "DEFAULT_CAPACITY", "TOPIC_ROLES"]

#: Samples kept: 20 minutes at the default interval of 2 s.
DEFAULT_CAPACITY = 600
#: The counted topics in pipeline order, by their attribute of :class:`~streamml.topics.Topics`.
TOPIC_ROLES = ("raw_events", "features", "dead_letters", "predictions", "features_labelled")


@dataclass(frozen=True)
class Sample:
    """One look at the pipeline at ``at`` (epoch seconds).

    ``lag`` holds every group the probe reported (a group whose lag could not
    be read is :meth:`GroupLag.unknown`); ``statuses`` the evaluator's verdict
    on each. ``snapshot`` is ``None`` when the topics could not be read this
    time; ``errors`` says what failed, in words.
    """

    at: float
    lag: list[GroupLag]
    statuses: list[GroupStatus]
    snapshot: PipelineSnapshot | None
    errors: tuple[str, ...] = ()


@dataclass
class _Counts:
    taken: int = 0
    failed: int = 0
    #: Seconds the newest sample took to take.
    seconds: float = 0.0


class SampleRing:
    """The newest ``capacity`` samples; thread-safe (one writer, any number of readers).

    ``topics`` maps each role of :data:`TOPIC_ROLES` to its topic name;
    ``context`` (namespace, model name, broker, PSI threshold...) is copied
    into every :meth:`series` answer.
    """

    def __init__(self, topics: dict[str, str], *, capacity: int = DEFAULT_CAPACITY, **context: Any) -> None:
        if capacity < 2:
            raise ValueError(f"capacity: at least 2 samples are needed for a rate, got {capacity}")
        self.topics = topics
        self.context = context
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._counts = _Counts()
        self._lock = threading.Lock()

    def add(self, sample: Sample, seconds: float = 0.0) -> None:
        """Append ``sample`` (taken in ``seconds``), dropping the oldest one past the capacity."""
        with self._lock:
            self._samples.append(sample)
            self._counts.taken += 1
            self._counts.failed += bool(sample.errors)
            self._counts.seconds = seconds

    @property
    def latest(self) -> Sample | None:
        """The newest sample, ``None`` before the first."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    @property
    def counts(self) -> tuple[int, int, float]:
        """``(samples taken, samples with an error, seconds the newest took)`` since the start."""
        with self._lock:
            return self._counts.taken, self._counts.failed, self._counts.seconds

    def samples(self) -> list[Sample]:
        """The kept samples, oldest first (a copy)."""
        with self._lock:
            return list(self._samples)

    def latest_snapshot(self) -> PipelineSnapshot | None:
        """The newest snapshot of the topics any sample has (it may be older than the newest sample)."""
        return next((s.snapshot for s in reversed(self.samples()) if s.snapshot is not None), None)

    # -- the JSON of /api/snapshot -------------------------------------------------
    def series(self) -> dict[str, Any]:
        """Everything the dashboard draws, JSON-ready (no NaN: unknown values are ``None``)."""
        samples = self.samples()
        latest = samples[-1] if samples else None
        snapshot = next((s.snapshot for s in reversed(samples) if s.snapshot is not None), None)
        taken, failed, _ = self.counts
        return {
            **self.context,
            "generated_at": latest.at if latest else None,
            "samples": {"kept": len(samples), "taken": taken, "failed": failed},
            "errors": list(latest.errors) if latest else [],
            "totals": _totals(snapshot),
            "lag": _lag_series(samples),
            "throughput": _throughput(samples, self.topics),
            "accuracy": _accuracy(samples, snapshot),
            "dead_letters": _dead_letters(snapshot),
            "drift": _drift(snapshot),
        }


def _totals(snapshot: PipelineSnapshot | None) -> dict[str, Any]:
    if snapshot is None:
        return {}
    champion = snapshot.champion
    return {
        "produced": snapshot.produced, "features": snapshot.features, "quarantined": snapshot.quarantined,
        "predictions": snapshot.predictions, "versions": len(snapshot.versions),
        "latest_version": snapshot.latest.version if snapshot.latest else None,
        "champion_version": champion.version if champion else None,
        "serving_version": _serving_version(snapshot),
        "scorer_accuracy": snapshot.scorer_accuracy, "scorer_rolling": snapshot.scorer_rolling,
        "drift_alerts": sum(1 for a in snapshot.alerts if a.rule == "psi"),
    }


def _serving_version(snapshot: PipelineSnapshot) -> int | None:
    """The version that began serving last: the app's current one, as its predictions show."""
    if not snapshot.first_scored_at:
        return None
    return max(snapshot.first_scored_at, key=lambda v: (snapshot.first_scored_at[v], v))


def _lag_series(samples: list[Sample]) -> dict[str, Any]:
    """Per group: total lag (records) and oldest unconsumed age (seconds) at each sample, and its verdict now."""
    groups: dict[str, dict[str, Any]] = {}
    for sample in samples:
        for row in sample.lag:
            groups.setdefault(row.group, {"group": row.group, "points": [], "seconds": []})
    for sample in samples:
        statuses = {s.group: s for s in sample.statuses}
        for name, entry in groups.items():
            status = statuses.get(name)
            # An unknown lag (ERROR) has total_lag None: a gap in the line, never a 0.
            entry["points"].append([sample.at, status.total_lag if status is not None else None])
            entry["seconds"].append([sample.at, status.max_lag_seconds if status is not None else None])
            if status is not None:
                entry.update(status=status.status.value, reason=status.reason, total_lag=status.total_lag,
                             max_lag_seconds=status.max_lag_seconds,
                             partitions=[p.as_dict() for p in status.partitions])
    return {"groups": sorted(groups.values(), key=lambda g: g["group"])}


def _throughput(samples: list[Sample], topics: dict[str, str]) -> dict[str, Any]:
    """Records per second written to each counted topic between consecutive samples (``None``: not read)."""
    series = []
    for role in TOPIC_ROLES:
        topic = topics.get(role)
        if topic is None:
            continue
        points: list[list[float | None]] = []
        previous: tuple[float, int] | None = None
        total: int | None = None
        for sample in samples:
            end = sample.snapshot.ends.get(topic) if sample.snapshot is not None else None
            if end is None:
                points.append([sample.at, None])
                previous = None
                continue
            total = end
            if previous is not None and sample.at > previous[0]:
                # A recreated topic's offsets start again: a fall is no negative throughput.
                points.append([sample.at, max(end - previous[1], 0) / (sample.at - previous[0])])
            previous = (sample.at, end)
        if total is not None:
            series.append({"topic": topic, "role": role, "total": total, "points": points})
    return {"topics": series}


def _accuracy(samples: list[Sample], snapshot: PipelineSnapshot | None) -> dict[str, Any]:
    """Per version: accuracy over its labelled predictions and when it began serving; the rolling accuracy."""
    rolling = [[s.at, s.snapshot.scorer_rolling] for s in samples if s.snapshot is not None]
    if snapshot is None:
        return {"versions": [], "swaps": [], "rolling": rolling}
    published = {v.version: v for v in snapshot.versions}
    versions = []
    for version in sorted(set(published) | set(snapshot.versions_scored)):
        labelled = snapshot.versions_labelled.get(version, 0)
        seen = published.get(version)
        first = snapshot.first_scored_at.get(version)
        versions.append({
            "version": version,
            "predictions": snapshot.versions_scored.get(version, 0),
            "labelled": labelled,
            "accuracy": snapshot.versions_correct.get(version, 0) / labelled if labelled else None,
            "learner_accuracy": seen.accuracy if seen else None,
            "published_at": seen.created_at / 1000 if seen else None,
            "first_scored_at": first / 1000 if first is not None else None,
            "withheld": seen.withheld if seen else False,
        })
    began = sorted(snapshot.first_scored_at.items(), key=lambda item: (item[1], item[0]))
    swaps = [{"version": version, "at": at / 1000} for version, at in began]
    return {"versions": versions, "swaps": swaps, "rolling": rolling}


def _dead_letters(snapshot: PipelineSnapshot | None) -> dict[str, Any]:
    if snapshot is None:
        return {"reasons": [], "total": None}
    reasons = [{"reason": r, "count": n} for r, n in sorted(snapshot.quarantine_rules.items(), key=lambda i: -i[1])]
    return {"reasons": reasons, "total": snapshot.quarantined}


def _drift(snapshot: PipelineSnapshot | None) -> dict[str, Any]:
    """Per field: PSI of each window kept, the newest and the highest, and how many windows alerted."""
    if snapshot is None:
        return {"fields": [], "windows": 0, "alerts": []}
    fields: dict[str, dict[str, Any]] = {}
    for window in snapshot.drift:
        for name, psi in window.psi.items():
            entry = fields.setdefault(name, {"field": name, "points": [], "alerts": 0})
            entry["points"].append([window.created_at / 1000, psi])
    for alert in snapshot.alerts:
        if alert.rule == "psi" and alert.field in fields:
            fields[alert.field]["alerts"] += 1
    for entry in fields.values():
        entry["psi"] = entry["points"][-1][1]
        entry["max_psi"] = max(p[1] for p in entry["points"])
    alerts = [
        {"field": a.field, "rule": a.rule, "value": a.value, "window": a.window} for a in snapshot.alerts[-20:]
    ]
    return {
        "fields": sorted(fields.values(), key=lambda f: (-f["psi"], f["field"])),
        "windows": snapshot.monitoring_windows,
        "alerts": alerts,
    }
