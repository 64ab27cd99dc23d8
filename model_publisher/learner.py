"""Progressive validation: every labeled event tests the model, then trains it.

For each labeled event the model first predicts (``predict_one``), the metrics
are updated with that prediction, and only then does the model learn the
label (``learn_one``). So every metric is measured on data the model had not
seen, without a held-out set. Unlabeled events are counted and skipped: they
carry nothing to learn.

The metrics depend on the model's task (:func:`model_publisher.catalog.task`):

classification
    ``accuracy`` (over every learned event), ``rolling_accuracy`` (the last
    :data:`ROLLING_WINDOW`), ``log_loss`` (over the ``n_scored_proba`` events
    with probabilities);
regression
    ``mae`` and ``rmse`` (over the ``n_scored`` events with a numeric
    prediction; a ``None`` prediction is not scored, as in river's
    ``evaluate.progressive_val_score``) and ``rolling_mae``.

Both report ``n_learned`` and ``n_seen``. For a classifier the same
test-then-train errors feed a river ADWIN detector: when it finds the error
rate has risen (a concept drift the model has not caught up with), the
learner logs one warning line and counts it in the metrics
(``error_rate_rises``, and ``error_rate_rise_at``, the ``n_learned`` of the
last one). Falls in the error rate (the model learning, or adapting) are not
counted. A regressor gets no detector: its absolute errors have no fixed
scale, and ADWIN's bound is meant for values in [0, 1], so a rise it flags
would mean something different per target; watch ``rolling_mae`` against
``mae`` instead.

Delayed labels: :meth:`OnlineLearner.predict_ahead` predicts an event that
has no label yet and remembers the prediction; :meth:`OnlineLearner.process_label`,
given the same event joined with its label later, scores that remembered
prediction and then learns. It is river's delayed progressive validation
(``evaluate.progressive_val_score`` with ``moment`` and ``delay``): the model is
judged as it was when the features were seen.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from river import metrics, utils
from river.drift import ADWIN

from model_publisher.catalog import Task, task
from streamml.envelope import ModelEnvelope

__all__ = ["OnlineLearner", "ROLLING_WINDOW", "partition_key", "predicts_by_argmax"]

logger = logging.getLogger(__name__)

#: Events in the rolling accuracy (or MAE) window.
ROLLING_WINDOW = 1000
#: Probabilities are clipped here so one confident mistake costs a finite loss.
_PROBA_FLOOR = 1e-15


def partition_key(topic: str, partition: int) -> str:
    """Return the ``topic[partition]`` key of ``input_offsets``."""
    return f"{topic}[{partition}]"


class OnlineLearner:
    """A model plus its progressive-validation metrics and input position.

    ``input_offsets`` maps ``topic[partition]`` to the next offset to read:
    everything before it has been seen (and learned, if labeled) by ``model``.
    Not thread-safe: one learner loop owns it.
    """

    def __init__(
        self,
        model: Any,
        *,
        n_learned: int = 0,
        n_seen: int = 0,
        accuracy: float | None = None,
        log_loss: float | None = None,
        n_scored: int = 0,
        input_offsets: Mapping[str, int] | None = None,
        rolling_window: int = ROLLING_WINDOW,
        error_rate_rises: int = 0,
        error_rate_rise_at: int | None = None,
        n_predicted_late: int = 0,
        max_awaiting: int = 1_000_000,
        mae: float | None = None,
        rmse: float | None = None,
        n_scored_regression: int = 0,
    ) -> None:
        self.model = model
        #: ``classification`` or ``regression``: which metrics are kept.
        self.task: Task = task(model)
        self.n_learned = n_learned
        self.n_seen = n_seen
        self.input_offsets: dict[str, int] = dict(input_offsets or {})
        # Cumulative metrics are kept as counts rather than river metric
        # objects so a resumed learner continues them from the envelope.
        self._n_correct = round((accuracy or 0.0) * n_learned)
        self._n_scored = n_scored
        self._loss_sum = (log_loss or 0.0) * n_scored
        # Regression: sums of absolute and squared errors, recovered from the published means.
        self._n_scored_regression = n_scored_regression
        self._abs_sum = (mae or 0.0) * n_scored_regression
        self._sq_sum = (rmse or 0.0) ** 2 * n_scored_regression
        # Regression: river's rolling MAE. Classification: hits in a window of
        # the same size, counted as integers (river's rolling Accuracy gives the
        # same ratio at about a fifth of the cost per event).
        self._rolling: utils.Rolling[metrics.base.Metric] = utils.Rolling(metrics.MAE, window_size=rolling_window)
        self._window_hits = WindowHits(rolling_window)
        self._has_proba = self.task == "classification" and callable(getattr(model, "predict_proba_one", None))
        # Where predict_one is river's default (the argmax of predict_proba_one), the
        # label comes from the probabilities already computed: one prediction per
        # event instead of two, the same label (measured: about 20% of a step).
        self._label_from_proba = self._has_proba and predicts_by_argmax(model)
        self.error_rate_rises = error_rate_rises
        self.error_rate_rise_at = error_rate_rise_at
        # river leaves ADWIN's __init__ unannotated. Its window is not published: it restarts on resume.
        self._errors = ADWIN()  # type: ignore[no-untyped-call]
        #: Delayed labels: predictions waiting for their label, by event id (oldest first).
        self._awaiting: OrderedDict[str, tuple[Any, Mapping[Any, float]]] = OrderedDict()
        self.max_awaiting = max_awaiting
        self.n_predicted_late = n_predicted_late
        #: Whether delayed-label events were seen (their counters go into the metrics).
        self.delayed = n_predicted_late > 0

    @classmethod
    def resume(cls, model: Any, envelope: ModelEnvelope) -> OnlineLearner:
        """Continue from a published version: its model, counters and input position.

        The rolling window restarts empty (its contents are not published).
        """
        m = envelope.metrics
        return cls(
            model,
            n_learned=envelope.n_learned,
            n_seen=int(m.get("n_seen", envelope.n_learned)),
            accuracy=m.get("accuracy"),
            log_loss=m.get("log_loss"),
            n_scored=int(m.get("n_scored_proba", 0)),
            input_offsets=envelope.input_offsets,
            error_rate_rises=int(m.get("error_rate_rises", 0)),
            error_rate_rise_at=int(m["error_rate_rise_at"]) if "error_rate_rise_at" in m else None,
            n_predicted_late=int(m.get("n_predicted_late", 0)),
            mae=m.get("mae"),
            rmse=m.get("rmse"),
            n_scored_regression=int(m.get("n_scored", 0)),
        )

    def process(self, x: dict[str, float], y: Any, *, topic: str, partition: int, offset: int) -> Any:
        """Test-then-train on one event at ``topic[partition]@offset``.

        Returns the prediction made before learning (``None`` for an
        unlabeled event, which is counted but neither predicted nor learned).

        If the model raises (a label of a type it cannot learn, a feature
        value it cannot take), the exception propagates and no counter,
        metric or input offset has moved: the caller decides to skip the
        record (and :meth:`advance` past it). The model itself may have been
        partly updated by then (a pipeline's scaler learns before its
        classifier raises); that cannot be undone without copying the model
        per event.
        """
        if y is None:
            self.n_seen += 1
            self.advance(topic, partition, offset)
            return None
        proba, y_pred = self._predict(x)
        self._learn_and_score(x, y, y_pred, proba)
        self.n_seen += 1
        self.advance(topic, partition, offset)
        return y_pred

    def predict_ahead(self, event_id: str, x: dict[str, float], *, topic: str, partition: int, offset: int) -> Any:
        """Delayed labels: predict an unlabelled event now; :meth:`process_label` scores it when its label comes.

        The prediction is remembered by ``event_id`` (the oldest are dropped
        past :attr:`max_awaiting`), so progressive validation scores the model
        as it was when the features were seen, not after it learned from
        events whose labels came first. Returns the prediction.
        """
        self.delayed = True
        proba, y_pred = self._predict(x)
        awaiting = self._awaiting
        awaiting[event_id] = (y_pred, proba)
        awaiting.move_to_end(event_id)
        while len(awaiting) > self.max_awaiting:
            awaiting.popitem(last=False)
        self.n_seen += 1
        self.advance(topic, partition, offset)
        return y_pred

    def process_label(
        self, event_id: str, x: dict[str, float], y: Any, *, topic: str, partition: int, offset: int
    ) -> Any:
        """Delayed labels: the joined record of an event seen earlier: score its earlier prediction, then learn.

        An event whose prediction is not remembered (seen before a restart, or
        dropped) is predicted now and counted in ``n_predicted_late``. Raises
        like :meth:`process` if the model cannot learn it; nothing moved then.
        """
        self.delayed = True
        stored = self._awaiting.get(event_id)
        proba: Mapping[Any, float]
        if stored is None:
            proba, y_pred = self._predict(x)
        else:
            y_pred, proba = stored
        self._learn_and_score(x, y, y_pred, proba)
        if stored is None:
            self.n_predicted_late += 1
        else:
            del self._awaiting[event_id]
        self.advance(topic, partition, offset)
        return y_pred

    def _predict(self, x: dict[str, float]) -> tuple[dict[Any, float], Any]:
        if self._label_from_proba:
            proba = self.model.predict_proba_one(x)
            # river's Classifier.predict_one, on the same probabilities.
            return proba, (max(proba, key=proba.get) if proba else None)
        proba = self.model.predict_proba_one(x) if self._has_proba else {}
        return proba, self.model.predict_one(x)

    def _learn_and_score(self, x: dict[str, float], y: Any, y_pred: Any, proba: Mapping[Any, float]) -> None:
        # Still test-then-train: the prediction was made before learning; the
        # metrics are only updated once learning succeeded too.
        if self.task == "regression":
            # The error first: a label that is not a number raises before the model learns it.
            target = float(y)
            error = target - float(y_pred) if y_pred is not None else None
            self.model.learn_one(x, y)
            self._score_regression(y, y_pred, error)
            self.n_learned += 1
            return
        self.model.learn_one(x, y)
        loss = None
        if proba:
            # Cross-entropy of the true class; equals binary log loss for two classes.
            loss = -math.log(max(float(proba.get(y, 0.0)), _PROBA_FLOOR))
        correct = y_pred == y
        self._window_hits.add(correct)
        self._n_correct += int(correct)
        self._watch_errors(not correct)
        if loss is not None:
            self._loss_sum += loss
            self._n_scored += 1
        self.n_learned += 1

    def _score_regression(self, y: Any, y_pred: Any, error: float | None) -> None:
        if error is None:
            return  # nothing predicted yet: not scored (river skips it too)
        self._abs_sum += abs(error)
        self._sq_sum += error * error
        self._n_scored_regression += 1
        self._rolling.update(y, y_pred)

    def _watch_errors(self, wrong: bool) -> None:
        detector = self._errors
        before = detector.estimation
        detector.update(1.0 if wrong else 0.0)  # type: ignore[no-untyped-call]
        if detector.drift_detected and detector.estimation > before:
            # ADWIN dropped the older part of its window: what is left is the recent error rate.
            self.error_rate_rises += 1
            self.error_rate_rise_at = self.n_learned + 1
            logger.warning(
                "learner error rate rose to %.1f%% (from %.1f%%) after %d learned events: "
                "a concept drift? (river ADWIN)",
                100 * detector.estimation, 100 * before, self.n_learned + 1,
            )

    def advance(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``topic[partition]@offset`` has been handled (even if skipped)."""
        key = partition_key(topic, partition)
        self.input_offsets[key] = max(self.input_offsets.get(key, 0), offset + 1)

    def metrics(self) -> dict[str, float]:
        """Return the envelope metrics: accuracy, rolling_accuracy, log_loss (or mae, rmse, rolling_mae), counts."""
        if self.task == "regression":
            return self._regression_metrics()
        result = {
            "accuracy": self._n_correct / self.n_learned if self.n_learned else 0.0,
            "rolling_accuracy": self._window_hits.ratio(),
            "n_learned": float(self.n_learned),
            "n_seen": float(self.n_seen),
            "n_scored_proba": float(self._n_scored),
            "error_rate_rises": float(self.error_rate_rises),
        }
        if self.error_rate_rise_at is not None:
            result["error_rate_rise_at"] = float(self.error_rate_rise_at)
        if self.delayed:
            result["n_predicted_late"] = float(self.n_predicted_late)
            result["n_awaiting_label"] = float(len(self._awaiting))
        if self._n_scored:
            result["log_loss"] = self._loss_sum / self._n_scored
        return result

    def _regression_metrics(self) -> dict[str, float]:
        n = self._n_scored_regression
        result = {
            "mae": self._abs_sum / n if n else 0.0,
            "rmse": math.sqrt(self._sq_sum / n) if n else 0.0,
            "rolling_mae": float(self._rolling.obj.get()),
            "n_learned": float(self.n_learned),
            "n_seen": float(self.n_seen),
            "n_scored": float(n),
        }
        if self.delayed:
            result["n_predicted_late"] = float(self.n_predicted_late)
            result["n_awaiting_label"] = float(len(self._awaiting))
        return result


class WindowHits:
    """Correct predictions among the last ``size`` (a rolling accuracy)."""

    __slots__ = ("_hits", "_size", "_count")

    def __init__(self, size: int) -> None:
        self._hits: deque[bool] = deque()
        self._size = size
        self._count = 0

    def add(self, correct: bool) -> None:
        """Count one prediction; the oldest leaves the window once it is full."""
        self._hits.append(correct)
        self._count += correct
        if len(self._hits) > self._size:
            self._count -= self._hits.popleft()

    def ratio(self) -> float:
        """The share of correct predictions in the window; 0.0 before the first."""
        return self._count / len(self._hits) if self._hits else 0.0


def predicts_by_argmax(model: Any) -> bool:
    """Whether ``model.predict_one(x)`` is river's default: the argmax of ``predict_proba_one(x)``.

    True for a river classifier that does not override ``predict_one``, and for a
    river pipeline whose last step is one (the pipeline hands both calls the same
    transformed ``x``). Anything else is predicted with both calls.
    """
    from river import base, compose

    if type(model) is compose.Pipeline:
        model = list(model.steps.values())[-1]
    return isinstance(model, base.Classifier) and type(model).predict_one is base.Classifier.predict_one
