"""Retraining triggers for batch training: a schedule, a drift alarm, a drop in the champion's metric.

Between two runs ``streamml train-batch --every D [--on-drift] [--on-metric-drop X]``
waits in :meth:`RetrainTriggers.wait`, which returns the first of:

- **schedule**: ``D`` has passed since the last run;
- **drift**: a profile on the monitoring topic (written by the stream
  processor's distribution monitor, or by anything that writes the same
  records, :mod:`streamml.monitoring`) raised a drift alert (PSI past its
  threshold) after the wait began;
- **metric drop**: the champion's accuracy (classification) on the live
  labelled features, over the last ``window`` of them, fell more than ``X``
  below its baseline (the accuracy of its first full window after the wait
  began; for regression the rolling MAE rose by more than ``X`` of it).

Both topics are read from their end when the wait begins (nothing old
re-triggers); the reason is returned as one line and recorded in the next
version's lineage (``trigger``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamml.cluster import Cluster
from streamml.errors import DecodeError, RecordError
from streamml.kafka import record_headers
from streamml.lag import log_end_offsets
from streamml.monitoring import PROFILE, decode_record
from streamml.records import FeatureVector, RecordCodec

__all__ = ["RetrainTriggers"]

logger = logging.getLogger(__name__)


class RetrainTriggers:
    """Wait for the next reason to retrain (see the module doc).

    ``champion`` returns the model to watch (anything with ``predict_one``)
    or ``None`` when there is none yet; it is asked again at each wait.
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        every: float | None,
        on_drift: bool = False,
        metric_drop: float | None = None,
        window: int = 500,
        task: str = "classification",
        champion: Callable[[], Any | None] = lambda: None,
    ) -> None:
        self.cluster = cluster
        self.every = every
        self.on_drift = on_drift
        self.metric_drop = metric_drop
        self.window = window
        self.task = task
        self.champion = champion
        self._codec = RecordCodec(FeatureVector)
        #: Set once the topics are assigned at their ends: what comes after is watched.
        self.watching = threading.Event()

    def _assign_end(self, consumer: Consumer, topic: str) -> None:
        # The log end from fetch responses (right on every broker), not
        # OFFSET_END, which asks ListOffsets (short on the embedded broker).
        ends = log_end_offsets(self.cluster, [(topic, p) for p in self.cluster.partitions(topic)])
        consumer.assign([TopicPartition(topic, p, end) for (_t, p), end in ends.items()])

    def wait(self, stop: threading.Event) -> str | None:
        """The reason to retrain now, or ``None`` when ``stop`` was set first."""
        deadline = None if self.every is None else time.monotonic() + self.every
        # A profile written while the end was being read is recognised by its time.
        began_ms = int(time.time() * 1000)
        monitoring = features = None
        model = self.champion() if self.metric_drop is not None else None
        scores: deque[float] = deque(maxlen=self.window)
        baseline: float | None = None
        try:
            if self.on_drift:
                monitoring = self.cluster.consumer("monitor")
                self._assign_end(monitoring, self.cluster.topics.monitoring)
            if model is not None:
                features = self.cluster.consumer("reader")
                self._assign_end(features, self.cluster.topics.features)
            self.watching.set()
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return f"schedule: every {self.every:g} s"
                if monitoring is not None:
                    reason = self._drift(monitoring, began_ms)
                    if reason:
                        return reason
                if features is not None:
                    for message in features.consume(500, timeout=0.1):
                        if message.error():
                            continue
                        try:
                            record = self._codec.decode(message.value(), record_headers(message))
                        except DecodeError:
                            continue
                        if record.label is None:
                            continue
                        scores.append(self._score(model, record.features, record.label))
                        if len(scores) == self.window:
                            current = sum(scores) / len(scores)
                            if baseline is None:
                                baseline = current
                                logger.info("trigger: champion baseline %.4f over %d events", baseline, self.window)
                            elif self._dropped(current, baseline):
                                return self._describe_drop(current, baseline)
                elif monitoring is None:
                    stop.wait(min(1.0, max(0.0, deadline - time.monotonic())) if deadline is not None else 1.0)
        finally:
            self.watching.clear()
            for consumer in (monitoring, features):
                if consumer is not None:
                    consumer.close()
        return None

    def _drift(self, consumer: Consumer, since_ms: int) -> str | None:
        for message in consumer.consume(100, timeout=0.1):
            if message.error():
                continue
            try:
                record = decode_record(message.value())
            except RecordError:
                continue
            if record.kind == PROFILE and record.drifted and record.created_at >= since_ms:
                psi = ", ".join(f"{a.field} PSI {a.value:.2f}" for a in record.alerts if a.rule == "psi")
                return f"drift: window {record.window} of {record.stream} ({psi})"
        return None

    def _score(self, model: Any, x: dict[str, float], y: Any) -> float:
        try:
            predicted = model.predict_one(dict(x))
        except Exception:  # noqa: BLE001 - a champion that raises scores a miss / the largest error
            return 0.0 if self.task == "classification" else float("inf")
        if self.task == "classification":
            return 1.0 if predicted == y else 0.0
        return abs(float(predicted) - float(y))

    def _dropped(self, current: float, baseline: float) -> bool:
        assert self.metric_drop is not None
        if self.task == "classification":
            return current < baseline - self.metric_drop
        return current > baseline * (1 + self.metric_drop)

    def _describe_drop(self, current: float, baseline: float) -> str:
        name = "accuracy" if self.task == "classification" else "MAE"
        return (
            f"metric drop: the champion's rolling {name} over {self.window} live events is {current:.4f}, "
            f"its baseline {baseline:.4f} (allowed change {self.metric_drop:g})"
        )
