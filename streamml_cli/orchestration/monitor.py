"""A live view of a running pipeline, read from its topics.

The monitor reads what the components wrote, not what they say about
themselves: event counts from log-end offsets, quarantine reasons from
dead-letter headers, model versions and learner metrics from the models
topic, the consuming app's versions and accuracy from the predictions
topic, and drift alerts from the monitoring topic. It uses ``assign()`` (no consumer group), so watching never adds lag.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from streamml.cluster import Cluster
from streamml.envelope import decode_envelope
from streamml.errors import EnvelopeError, SerializationError
from streamml.kafka import record_headers
from streamml.lag import log_end_offsets
from streamml.monitoring import PROFILE, decode_record
from streamml.records import DeadLetterReason, Prediction, RecordCodec
from streamml.trust import GATE_KEY

__all__ = ["PipelineSnapshot", "PipelineMonitor", "ModelVersionSeen", "AlertSeen", "DriftWindowSeen"]

_ROLLING = 1000
#: Drift windows kept (the newest): a long-running monitor must not grow without bound.
_DRIFT_KEPT = 200


@dataclass(frozen=True)
class ModelVersionSeen:
    """One envelope on the models topic, as the monitor saw it."""

    version: int
    created_at: int
    n_learned: int
    accuracy: float | None
    rolling_accuracy: float | None
    #: Rises of the learner's error rate its ADWIN detector found, and the n_learned of the last one.
    error_rate_rises: int = 0
    error_rate_rise_at: int | None = None
    #: The quality gate refused it: published, never served.
    withheld: bool = False


@dataclass(frozen=True)
class AlertSeen:
    """One alert of a monitoring window, and where in its monitor's stream the window ended."""

    field: str
    rule: str
    value: float
    window: int
    #: Valid events the monitor had seen when the window closed.
    observed: int


@dataclass(frozen=True)
class DriftWindowSeen:
    """One closed monitoring window: the PSI of each field it scored (fields without a PSI are left out)."""

    window: int
    #: Epoch ms the processor's monitor closed the window.
    created_at: int
    #: Which processor's monitor wrote it (``<group>@<host>:<pid>``).
    source: str
    psi: dict[str, float]


@dataclass
class PipelineSnapshot:
    """Counts and metrics at one moment."""

    produced: int = 0
    features: int = 0
    quarantined: int = 0
    predictions: int = 0
    #: Delayed-label mode: feature vectors joined with their label.
    joined: int = 0
    quarantine_rules: Counter[str] = field(default_factory=Counter)
    versions: list[ModelVersionSeen] = field(default_factory=list)
    versions_scored: Counter[int] = field(default_factory=Counter)
    #: The earliest ``scored_at`` (epoch ms) of a prediction per model version:
    #: with the envelope's ``created_at``, how long a version took to reach the scorer.
    first_scored_at: dict[int, int] = field(default_factory=dict)
    #: Predictions whose version is older than the one before them on the same
    #: partition: the scorer went back to an older model (never, when healthy).
    scorer_version_regressions: int = 0
    scorer_correct: int = 0
    scorer_labelled: int = 0
    scorer_rolling: float | None = None
    monitoring_windows: int = 0
    alerts: list[AlertSeen] = field(default_factory=list)
    #: Log-end offsets summed per counted topic (name -> records): throughput is its rate.
    ends: dict[str, int] = field(default_factory=dict)
    #: Labelled predictions per model version, and how many of them were right: accuracy as the app measured it.
    versions_labelled: Counter[int] = field(default_factory=Counter)
    versions_correct: Counter[int] = field(default_factory=Counter)
    #: The newest drift windows (at most ``_DRIFT_KEPT``), oldest first.
    drift: list[DriftWindowSeen] = field(default_factory=list)

    def copy(self) -> PipelineSnapshot:
        """A copy that later polls do not change (a poll that overran its bound may still be running)."""
        return replace(
            self,
            quarantine_rules=Counter(self.quarantine_rules),
            versions=list(self.versions),
            versions_scored=Counter(self.versions_scored),
            first_scored_at=dict(self.first_scored_at),
            alerts=list(self.alerts),
            ends=dict(self.ends),
            versions_labelled=Counter(self.versions_labelled),
            versions_correct=Counter(self.versions_correct),
            drift=list(self.drift),
        )

    def first_alert(self, field_name: str, rule: str = "psi") -> AlertSeen | None:
        """The earliest alert of ``rule`` on ``field_name``, if any."""
        return next((a for a in self.alerts if a.field == field_name and a.rule == rule), None)

    @property
    def latest(self) -> ModelVersionSeen | None:
        return self.versions[-1] if self.versions else None

    @property
    def champion(self) -> ModelVersionSeen | None:
        """The newest version the quality gate did not withhold: what consumers serve."""
        return next((v for v in reversed(self.versions) if not v.withheld), None)

    def first_prediction_after(self, version: int) -> float | None:
        """Seconds from ``version``'s publication (envelope ``created_at``) to its first prediction.

        ``None`` when the version made no prediction (or was not seen on the models topic).
        """
        scored = self.first_scored_at.get(version)
        published = next((v.created_at for v in self.versions if v.version == version), None)
        if scored is None or published is None:
            return None
        return (scored - published) / 1000

    @property
    def scorer_accuracy(self) -> float | None:
        return self.scorer_correct / self.scorer_labelled if self.scorer_labelled else None


class PipelineMonitor:
    """Incrementally reads the pipeline's output topics; call :meth:`poll` often."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._topics = cluster.topics
        self._predictions = RecordCodec(Prediction)
        self._consumer = cluster.consumer("monitor", **{"fetch.wait.max.ms": cluster.settings.fetch_wait_max_ms})
        topics = self._topics
        counts = cluster.partition_counts([
            topics.models, topics.predictions, topics.dead_letters, topics.raw_events, topics.features,
            topics.monitoring, topics.features_labelled,
        ])
        watched = [topics.models, topics.predictions, topics.dead_letters, topics.monitoring]
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in watched for p in range(counts.get(t, 0))]
        )
        self._counted = {
            t: list(range(counts.get(t, 0)))
            for t in (topics.raw_events, topics.features, topics.dead_letters, topics.predictions,
                      topics.features_labelled)
        }
        self._recent: deque[bool] = deque(maxlen=_ROLLING)
        self._last_version: dict[int, int] = {}
        self.snapshot = PipelineSnapshot()
        self.undecodable = 0

    def poll(self, max_records: int = 5000) -> PipelineSnapshot:
        """Read what is new (up to ``max_records``), refresh the counts and return a copy of the snapshot."""
        remaining = max_records
        while remaining > 0:
            batch = self._consumer.consume(min(remaining, 1000), timeout=0.05)
            if not batch:
                break
            remaining -= len(batch)
            for message in batch:
                if message.error() is None:
                    self._take(message)
        ends = log_end_offsets(
            self._cluster, [(t, p) for t, parts in self._counted.items() for p in parts], timeout=5.0
        )
        total = Counter[str]()
        for (topic, _), end in ends.items():
            total[topic] += end
        snap = self.snapshot
        snap.produced = total[self._topics.raw_events]
        snap.features = total[self._topics.features]
        snap.quarantined = total[self._topics.dead_letters]
        snap.predictions = total[self._topics.predictions]
        snap.joined = total[self._topics.features_labelled]
        snap.ends = dict(total)
        return snap.copy()

    def _take(self, message: Message) -> None:
        topic = message.topic()
        if topic == self._topics.dead_letters:
            self.snapshot.quarantine_rules[DeadLetterReason.rule_of(record_headers(message)) or "unknown"] += 1
        elif topic == self._topics.models:
            try:
                env = decode_envelope(message.value(), record_headers(message))
            except EnvelopeError:
                self.undecodable += 1
                return
            if env.model_name == self._cluster.settings.model_name:
                self.snapshot.versions.append(
                    ModelVersionSeen(
                        env.version,
                        env.created_at,
                        env.n_learned,
                        env.metrics.get("accuracy"),
                        env.metrics.get("rolling_accuracy"),
                        int(env.metrics.get("error_rate_rises", 0)),
                        _optional_int(env.metrics.get("error_rate_rise_at")),
                        env.lineage.get(GATE_KEY) == "refused",
                    )
                )
        elif topic == self._topics.monitoring:
            try:
                report = decode_record(message.value())
            except SerializationError:
                self.undecodable += 1
                return
            if report.kind == PROFILE:
                self.snapshot.monitoring_windows += 1
                self.snapshot.alerts += [
                    AlertSeen(a.field, a.rule, a.value, report.window, report.observed) for a in report.alerts
                ]
                psi = {
                    name: float(entry["psi"]) for name, entry in report.fields.items()
                    if isinstance(entry.get("psi"), (int, float))
                }
                drift = self.snapshot.drift
                drift.append(DriftWindowSeen(report.window, report.created_at, report.source, psi))
                del drift[:-_DRIFT_KEPT]
        elif topic == self._topics.predictions:
            try:
                record = self._predictions.decode(message.value(), record_headers(message))
            except SerializationError:
                self.undecodable += 1
                return
            snap = self.snapshot
            snap.versions_scored[record.model_version] += 1
            # Partitions are read in no particular order: the earliest, not the first read.
            first = snap.first_scored_at.get(record.model_version)
            if first is None or record.scored_at < first:
                snap.first_scored_at[record.model_version] = record.scored_at
            partition = message.partition() or 0
            if record.model_version < self._last_version.get(partition, 0):
                snap.scorer_version_regressions += 1
            self._last_version[partition] = record.model_version
            if record.label is not None and record.prediction is not None:
                correct = _same(record.prediction, record.label)
                snap.scorer_labelled += 1
                snap.scorer_correct += correct
                snap.versions_labelled[record.model_version] += 1
                snap.versions_correct[record.model_version] += correct
                self._recent.append(correct)
                snap.scorer_rolling = sum(self._recent) / len(self._recent)

    def close(self) -> None:
        self._consumer.close()


def _optional_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _same(prediction: object, label: object) -> bool:
    # Labels travel as Avro unions (int 1 vs bool True): compare by value.
    try:
        return float(prediction) == float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return prediction == label
