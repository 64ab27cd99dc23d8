"""Batch (static) training: a snapshot of the features topic, a scikit-learn fit, a gated publish.

One run of :meth:`BatchTrainer.run`:

1. reads a snapshot of the features topic between offsets or over an event-time
   range (:mod:`model_publisher.snapshot`);
2. splits it in time: the newest ``holdout`` fraction is held out, never a
   random split (on a stream that leaks the future into training);
3. fits the spec's estimator on the older part and measures it on the holdout;
4. gates it: the candidate and the champion (the version consumers of
   ``champion`` are served, by default this model's own) predict the same
   labelled events that come after what either has learned
   (:mod:`model_publisher.gate`): the newest such rows of the snapshot are
   kept out of training for it, and what is missing is waited for on the
   live topic, up to ``gate_timeout``;
5. publishes it as the next version of its own name, sealed with skops and
   signed, ``kind="batch"``, with the snapshot's offsets, the holdout metrics,
   the estimator's parameters and the gate's decision in its lineage. A
   refused candidate is published withheld (the registry keeps the numbers),
   and consumers keep the champion.

A batch model has its own model name: one publisher per name (the online
learner owns its name), so ``train-batch`` refuses a name that holds online
versions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from model_publisher.batch_catalog import build_batch, task_of
from model_publisher.gate import GateDecision, QualityGate
from model_publisher.learner import partition_key
from model_publisher.publisher import ModelPublisher
from model_publisher.snapshot import Snapshot, read_snapshot
from streamml.cluster import Cluster
from streamml.envelope import GOLDEN_EXAMPLES, ModelEnvelope
from streamml.errors import ConfigError, DecodeError, EnvelopeError
from streamml.kafka import record_headers
from streamml.records import FeatureVector, RecordCodec
from streamml.registry import read_history
from streamml.sklearn_format import SklearnModel
from streamml.trust import load_model

__all__ = ["BatchTrainer", "BatchResult", "MIN_ROWS"]

logger = logging.getLogger(__name__)

#: Fewest labelled rows a snapshot must hold (train plus holdout).
MIN_ROWS = 20

Event = tuple[dict[str, float], Any]


@dataclass
class BatchResult:
    """What one batch run trained, measured, decided and published."""

    snapshot: Snapshot
    metrics: dict[str, float]
    decision: GateDecision | None
    envelope: ModelEnvelope | None

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self.snapshot),
            "snapshot": self.snapshot.lineage(),
            "metrics": self.metrics,
            "gate": None if self.decision is None else self.decision.lineage(),
            "version": None if self.envelope is None else self.envelope.version,
            "model_name": None if self.envelope is None else self.envelope.model_name,
        }


def _params(estimator: Any) -> str:
    """The estimator's parameters as sorted JSON (non-JSON values as their repr)."""
    params = estimator.get_params(deep=True)
    plain = {k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v) for k, v in params.items()}
    return json.dumps(plain, sort_keys=True, default=repr)


class BatchTrainer:
    """Train ``spec`` on snapshots of the features topic and publish as ``cluster.settings.model_name``."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        spec: str,
        holdout: float = 0.2,
        champion: str | None = None,
        gate_margin: float = 0.02,
        gate_events: int = 200,
        gate_timeout: float = 60.0,
    ) -> None:
        if not 0 < holdout < 1:
            raise ConfigError(f"holdout: must be a fraction between 0 and 1, got {holdout}")
        self.cluster = cluster
        self.settings = cluster.settings
        self.model_name = self.settings.model_name
        self.topic = cluster.topics.features
        self.spec = spec
        self.holdout = holdout
        self.champion_name = champion or self.model_name
        self.gate_events = gate_events
        self.gate_timeout = gate_timeout
        self.gate_margin = gate_margin
        #: ``classification`` or ``regression``, from the spec's estimator.
        self.task = task_of(build_batch(spec))  # an unknown spec fails before any broker work

    def fit(self, snapshot: Snapshot) -> tuple[Any, dict[str, float], int]:
        """Fit on the older rows, measure on the newest ``holdout`` fraction; ``(estimator, metrics, n_train)``."""
        n = len(snapshot)
        if n < MIN_ROWS:
            raise ConfigError(
                f"the snapshot holds {n} labelled rows of {self.topic}; batch training needs at least {MIN_ROWS}"
            )
        n_holdout = max(1, math.ceil(n * self.holdout))
        n_train = n - n_holdout
        frame, labels = snapshot.frame, snapshot.labels
        estimator = build_batch(self.spec)
        x_train, y_train = frame.iloc[:n_train], labels[:n_train]
        x_hold, y_hold = frame.iloc[n_train:], labels[n_train:]
        if task_of(estimator) == "classification" and len(set(y_train)) < 2:
            raise ConfigError(f"the training rows hold one class only ({y_train[0]!r}): widen the snapshot")
        estimator.fit(x_train, y_train)
        predicted = list(estimator.predict(x_hold))
        metrics: dict[str, float] = {"n_train": float(n_train), "n_holdout": float(n_holdout)}
        if task_of(estimator) == "classification":
            metrics["holdout_accuracy"] = sum(int(p == y) for p, y in zip(predicted, y_hold, strict=True)) / n_holdout
            if hasattr(estimator, "predict_proba"):
                from sklearn.metrics import log_loss

                proba = estimator.predict_proba(x_hold)
                metrics["holdout_log_loss"] = float(log_loss(y_hold, proba, labels=list(estimator.classes_)))
        else:
            errors = [float(p) - float(y) for p, y in zip(predicted, y_hold, strict=True)]
            metrics["holdout_mae"] = sum(abs(e) for e in errors) / n_holdout
            metrics["holdout_rmse"] = math.sqrt(sum(e * e for e in errors) / n_holdout)
        return estimator, metrics, n_train

    def champion_model(self) -> Any | None:
        """The champion's serving model now (``None``: none yet), for the metric-drop trigger."""
        found = self._champion()
        return None if found is None else found[0]

    def _champion(self) -> tuple[Any, ModelEnvelope] | None:
        """The model consumers of the champion name are served now, loaded and verified (``None``: none yet)."""
        history = read_history(self.cluster)
        online = [
            r.version for r in history.versions
            if r.model_name == self.model_name and r.envelope is not None and r.envelope.kind == "online"
        ]
        if online:
            raise ConfigError(
                f"{self.model_name} holds online versions (v{max(v for v in online if v)}): a batch model needs its "
                f"own name, one publisher per name (e.g. --model {self.model_name}-batch --champion {self.model_name})"
            )
        if self.champion_name != self.model_name:
            history.require_model(self.champion_name, self.cluster.topics.models)
        served = history.served(self.champion_name)
        if served is None:
            return None
        record = next(
            r for r in reversed(history.versions)
            if r.model_name == self.champion_name and r.version == served and r.verdict is not None
        )
        assert record.verdict is not None
        try:
            return load_model(record.verdict), record.verdict.envelope
        except EnvelopeError as exc:
            raise ConfigError(f"champion {self.champion_name} v{served} does not load here: {exc}") from exc

    def held_back_events(self, after: Mapping[str, int], n: int, timeout: float) -> list[Event]:
        """Up to ``n`` labelled feature records at or after ``after`` per partition, waiting up to ``timeout``."""
        consumer = self.cluster.consumer("gate")
        codec = RecordCodec(FeatureVector)
        events: list[Event] = []
        try:
            consumer.assign([
                TopicPartition(self.topic, p, after.get(partition_key(self.topic, p), 0))
                for p in self.cluster.partitions(self.topic)
            ])
            deadline = time.monotonic() + timeout
            while len(events) < n and time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.2):
                    if message.error():
                        continue
                    try:
                        record = codec.decode(message.value(), record_headers(message))
                    except DecodeError:
                        continue
                    if record.label is not None and len(events) < n:
                        events.append((dict(record.features), record.label))
        finally:
            consumer.close()
        return events

    def run(
        self,
        *,
        start: Mapping[int, int] | None = None,
        end: Mapping[int, int] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        max_rows: int = 1_000_000,
        publish: bool = True,
        trigger: str = "manual",
    ) -> BatchResult:
        """Snapshot, fit, gate and (unless ``publish`` is false) publish one batch model.

        ``trigger`` says why this run happened (recorded in the lineage).
        """
        self.cluster.require_topics([self.topic, self.cluster.topics.models])
        champion = self._champion()
        snapshot = read_snapshot(
            self.cluster, self.topic, start=start, end=end, since_ms=since_ms, until_ms=until_ms, max_rows=max_rows
        )
        gate_events: list[Event] = []
        learned: dict[str, int] = {}
        if self.gate_events > 0 and champion is not None:
            # Held back: events the champion has not learned. The newest of
            # them in the snapshot are kept out of training; the rest are
            # waited for on the live topic.
            learned = {k: o for k, o in champion[1].input_offsets.items() if k.startswith(f"{self.topic}[")}
            snapshot, gate_events = snapshot.hold_back(learned, self.gate_events)
        estimator, metrics, n_train = self.fit(snapshot)
        names = list(snapshot.frame.columns)
        candidate = SklearnModel(estimator, names)
        decision = None
        if self.gate_events > 0:
            gate = QualityGate(margin=self.gate_margin, min_events=min(20, self.gate_events), task=task_of(estimator))
            if champion is not None and len(gate_events) < self.gate_events:
                after = dict(snapshot.end_offsets)
                for key, offset in learned.items():
                    after[key] = max(after.get(key, 0), offset)
                gate_events += self.held_back_events(after, self.gate_events - len(gate_events), self.gate_timeout)
            decision = gate.judge(
                candidate,
                None if champion is None else champion[0],
                gate_events,
                champion_name=self.champion_name if champion else None,
                champion_version=champion[1].version if champion else None,
            )
            logger.info("gate: %s", decision.reason)
        envelope = None
        if publish:
            envelope = self._publish(estimator, snapshot, metrics, n_train, decision, trigger)
        return BatchResult(snapshot, metrics, decision, envelope)

    def _publish(
        self, estimator: Any, snapshot: Snapshot, metrics: dict[str, float], n_train: int,
        decision: GateDecision | None, trigger: str,
    ) -> ModelEnvelope:
        lineage = {
            "trainer": "batch",
            "trigger": trigger,
            "spec": self.spec,
            "estimator_params": _params(estimator),
            "holdout_fraction": f"{self.holdout:g}",
            "holdout_split": "time-ordered (newest rows held out)",
            **snapshot.lineage(),
            **({} if decision is None else decision.lineage()),
        }
        frame = snapshot.frame
        golden = [
            {str(k): float(v) for k, v in frame.iloc[i].items()}
            for i in range(max(0, len(frame) - GOLDEN_EXAMPLES), len(frame))
        ]
        publisher = ModelPublisher(self.cluster, flavor="sklearn")
        try:
            publisher.start()
            return publisher.publish(
                estimator,
                metrics=metrics,
                n_learned=n_train,
                input_offsets=snapshot.end_offsets,
                golden_inputs=golden,
                kind="batch",
                lineage=lineage,
                feature_names=list(frame.columns),
            )
        finally:
            publisher.close()
