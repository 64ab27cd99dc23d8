"""Drift scores, batch-level contract rules and the distribution monitor (pure, no Kafka).

:class:`DistributionMonitor` sees every valid event the processor emits. Until
it has a reference it freezes one from the first ``reference_events`` events
(unless the schema's profile, or an earlier run's record on the monitoring
topic, gives one). Then every ``window_events`` events close a window, which
is compared with the reference and becomes a :class:`~streamml.monitoring.MonitoringRecord`:

* numeric fields: count, mean, std, min, max, skewness, null rate; the
  population stability index (PSI) over the reference's deciles; the
  two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value; and the
  changes a river ADWIN detector (fed every value, never reset) found in the
  window;
* categorical fields: top categories and their shares, mode, null rate, the
  share of categories the reference never saw, PSI over categories and the
  Jensen-Shannon distance.

A field is *drifted* when its PSI reaches ``psi_threshold`` (the usual rule
of thumb: below 0.1 no shift, 0.1 to 0.25 moderate, above 0.25 major). Only
PSI raises the alert: with windows of hundreds of events the KS test and
ADWIN flag shifts too small to matter (and, over many windows, by chance), so
they are reported beside it. The contract's batch-level rules
(``max_null_rate``, ``max_category_share``, ``max_unseen_share``) raise alerts
the same way. A field entering drift or breaking a rule logs one warning
line; leaving it logs one info line. See ``docs/drift.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from river.drift import ADWIN
from scipy.spatial.distance import jensenshannon
from scipy.special import kolmogorov

from stream_processors.profiles import (
    CategoricalReference,
    NumericReference,
    Reference,
    WindowSample,
    numeric_summary,
)
from streamml.monitoring import PROFILE, REFERENCE, Alert, MonitoringRecord
from streamml.serde import FieldRule

__all__ = ["psi", "numeric_scores", "categorical_scores", "DistributionMonitor", "UNSEEN"]

logger = logging.getLogger(__name__)

#: Shares below this count as this in PSI (an empty bin would make it infinite).
_SHARE_FLOOR = 1e-4
#: Categories shown per categorical field in a profile.
_TOP = 5
#: Bucket for categories the reference never saw.
UNSEEN = "(unseen)"


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    """Population stability index of ``actual`` shares against ``expected`` shares (same bins)."""
    e = np.maximum(np.asarray(list(expected), dtype=float), _SHARE_FLOOR)
    a = np.maximum(np.asarray(list(actual), dtype=float), _SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_scores(reference: NumericReference, values: list[float]) -> dict[str, float | None]:
    """PSI over the reference's deciles and the KS statistic and p-value of ``values``."""
    if not values:
        return {"psi": None, "ks_statistic": None, "ks_pvalue": None}
    sample = np.sort(np.asarray(values, dtype=float))
    n = len(sample)
    # Bin edges: the reference's deciles, each bin (low, high]; a discrete field's repeated deciles merge.
    edges = np.unique(np.asarray(reference.quantiles[10:100:10]))
    expected = np.diff(np.concatenate(([0.0], reference.cdf(edges), [1.0])))
    actual = np.diff(np.concatenate(([0.0], np.searchsorted(sample, edges, side="right") / n, [1.0])))
    # KS: the largest gap between the two distribution functions, looked at on
    # both samples' points (the reference known by its quantiles).
    points = np.unique(np.concatenate((sample, np.asarray(reference.quantiles))))
    window_cdf = np.searchsorted(sample, points, side="right") / n
    statistic = float(np.max(np.abs(window_cdf - reference.cdf(points))))
    m = reference.count
    effective = n * m / (n + m)
    return {
        "psi": psi(expected, actual),
        "ks_statistic": statistic,
        "ks_pvalue": float(kolmogorov(math.sqrt(effective) * statistic)),
    }


def categorical_scores(reference: CategoricalReference, counts: Counter[str]) -> dict[str, Any]:
    """Shares, mode, unseen share, PSI and Jensen-Shannon distance of a window's categories."""
    total = sum(counts.values())
    if total == 0:
        return {"top": [], "mode": None, "max_share": None, "unseen_share": None, "psi": None, "js_distance": None}
    top = [[category, n / total] for category, n in counts.most_common(_TOP)]
    scores: dict[str, Any] = {"top": top, "mode": top[0][0], "max_share": top[0][1]}
    if reference.high_cardinality:
        return {**scores, "unseen_share": None, "psi": None, "js_distance": None}
    known = sorted(reference.shares)
    unseen = sum(n for category, n in counts.items() if category not in reference.shares)
    expected = [reference.shares[c] for c in known] + [0.0]
    actual = [counts.get(c, 0) / total for c in known] + [unseen / total]
    return {
        **scores,
        "unseen_share": unseen / total,
        "psi": psi(expected, actual),
        "js_distance": float(jensenshannon(expected, actual, base=2)),
    }


class DistributionMonitor:
    """Profiles valid events window by window and compares each window with a reference.

    ``numeric`` and ``categorical`` name the monitored fields; ``rules`` are the
    schema's field rules (for the batch-level contract rules). ``source`` names
    this monitor in its records. Call :meth:`observe` for every valid event,
    :meth:`count_quarantined` for every quarantined one, and :meth:`take_records`
    after each batch for the records to send.
    """

    def __init__(
        self,
        *,
        stream: str,
        source: str,
        numeric: Iterable[str],
        categorical: Iterable[str],
        rules: Iterable[FieldRule] = (),
        reference: Reference | None = None,
        reference_events: int = 1000,
        window_events: int = 500,
        psi_threshold: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_events < 1 or reference_events < 1:
            raise ValueError("window_events and reference_events must be at least 1")
        self.stream = stream
        self.source = source
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.rules = {rule.name: rule for rule in rules if _has_batch_rule(rule)}
        self.reference = reference
        self.reference_events = reference_events
        self.window_events = window_events
        self.psi_threshold = psi_threshold
        self._clock = clock
        # river leaves ADWIN's __init__ and update unannotated.
        self._detectors = {name: ADWIN() for name in self.numeric}  # type: ignore[no-untyped-call]
        self._changes: Counter[str] = Counter()
        self._alerting: set[tuple[str, str]] = set()
        self._pending: list[MonitoringRecord] = []
        if reference is not None:
            # Sent again at every start, so the topic's retention never loses the reference in use.
            self._pending.append(self._reference_record(reference))
        self.windows = 0
        #: Valid events seen since this monitor started.
        self.observed = 0
        self._sample = self._new_sample()

    def _new_sample(self) -> WindowSample:
        return WindowSample(self.numeric, self.categorical, tuple(self.rules))

    def observe(self, event: Mapping[str, Any], time_ms: int) -> None:
        """Count one valid event; close the window (or freeze the reference) when full."""
        self._sample.add(event, time_ms)
        self.observed += 1
        if self.reference is not None:
            for name, detector in self._detectors.items():
                value = event.get(name)
                if value is not None:
                    detector.update(float(value))  # type: ignore[no-untyped-call]
                    if detector.drift_detected:
                        self._changes[name] += 1
        events = self._sample.events
        if self.reference is None and events >= self.reference_events:
            self.reference = self._sample.reference()
            self._pending.append(self._reference_record(self.reference))
            logger.info("distribution monitor %s: reference frozen from the first %d events", self.source, events)
            self._sample = self._new_sample()
        elif self.reference is not None and events >= self.window_events:
            self._pending.append(self._close_window(self.reference))

    def count_quarantined(self) -> None:
        """Count one quarantined event in the current window."""
        self._sample.quarantined += 1

    def take_records(self) -> list[MonitoringRecord]:
        """The records made since the last call (references and closed windows), oldest first."""
        records, self._pending = self._pending, []
        return records

    def _reference_record(self, reference: Reference) -> MonitoringRecord:
        return MonitoringRecord(
            kind=REFERENCE, stream=self.stream, source=self.source, created_at=self._now_ms(),
            fields=reference.as_fields(), events=reference.events, origin=reference.origin,
        )

    def _close_window(self, reference: Reference) -> MonitoringRecord:
        sample, self._sample = self._sample, self._new_sample()
        self.windows += 1
        fields: dict[str, dict[str, Any]] = {}
        alerts: list[Alert] = []
        for name in self.numeric:
            entry: dict[str, Any] = {"kind": "numeric", "null_rate": sample.null_rate(name)}
            entry.update(numeric_summary(sample.values[name]))
            ref = reference.fields.get(name)
            if isinstance(ref, NumericReference):
                entry.update(numeric_scores(ref, sample.values[name]))
            entry["adwin_changes"] = self._changes.pop(name, 0)
            fields[name] = entry
        for name in self.categorical:
            entry = {"kind": "categorical", "count": sum(sample.counts[name].values()),
                     "null_rate": sample.null_rate(name)}
            ref = reference.fields.get(name)
            if isinstance(ref, CategoricalReference):
                entry.update(categorical_scores(ref, sample.counts[name]))
            fields[name] = entry
        for name, entry in fields.items():
            score = entry.get("psi")
            if score is not None and score >= self.psi_threshold:
                alerts.append(Alert(name, "psi", score, self.psi_threshold,
                                    f"{name} drifted: PSI {score:.3f} >= {self.psi_threshold:g}"))
        alerts += self._rule_alerts(sample, fields)
        record = MonitoringRecord(
            kind=PROFILE, stream=self.stream, source=self.source, created_at=self._now_ms(), fields=fields,
            window=self.windows, events=sample.events, quarantined=sample.quarantined, observed=self.observed,
            first_event_time=sample.first_event_time, last_event_time=sample.last_event_time,
            origin=reference.origin, alerts=tuple(alerts),
        )
        self._log_transitions(record)
        return record

    def _rule_alerts(self, sample: WindowSample, fields: Mapping[str, Mapping[str, Any]]) -> list[Alert]:
        alerts = []
        for name, rule in self.rules.items():
            observed = {
                "max_null_rate": sample.null_rate(name),
                "max_category_share": fields.get(name, {}).get("max_share"),
                "max_unseen_share": fields.get(name, {}).get("unseen_share"),
            }
            for key, value in observed.items():
                limit = getattr(rule, key)
                if limit is not None and value is not None and value > limit:
                    what = key.removeprefix("max_").replace("_", " ")
                    alerts.append(Alert(name, key, value, limit,
                                        f"{name}: {what} {value:.3f} is above the contract's {key} {limit:g}"))
        return alerts

    def _log_transitions(self, record: MonitoringRecord) -> None:
        now = {(alert.field, alert.rule): alert for alert in record.alerts}
        for key in sorted(now.keys() - self._alerting):
            logger.warning("%s (stream %s, window %d of %s)", now[key].message, self.stream, record.window, self.source)
        for field, rule in sorted(self._alerting - now.keys()):
            logger.info("%s back within %s (stream %s, window %d)", field, rule, self.stream, record.window)
        self._alerting = set(now)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _has_batch_rule(rule: FieldRule) -> bool:
    return any(v is not None for v in (rule.max_null_rate, rule.max_category_share, rule.max_unseen_share))
