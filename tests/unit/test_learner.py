"""Progressive validation in OnlineLearner: predict, then score, then learn."""

from __future__ import annotations

import copy
import pickle
import random
from typing import Any

import pytest
from river import base

from model_publisher import catalog
from model_publisher.learner import OnlineLearner
from streamml.envelope import seal

T = "features.v1"


class CallRecorder:
    """A model that records the order of calls and predicts the last label it learned."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.last: Any = None

    def predict_proba_one(self, x: dict[str, float]) -> dict[Any, float]:
        self.calls.append(("predict_proba", x["i"]))
        return {} if self.last is None else {self.last: 1.0}

    def predict_one(self, x: dict[str, float]) -> Any:
        self.calls.append(("predict", x["i"]))
        return self.last

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        self.calls.append(("learn", x["i"]))
        self.last = y


def test_each_event_is_predicted_before_it_is_learned() -> None:
    model = CallRecorder()
    learner = OnlineLearner(model)
    for i in range(3):
        learner.process({"i": i}, True, topic=T, partition=0, offset=i)
    assert [c for c in model.calls if c[0] != "predict_proba"] == [
        ("predict", 0), ("learn", 0), ("predict", 1), ("learn", 1), ("predict", 2), ("learn", 2),
    ]


def test_the_metric_scores_the_prediction_made_before_learning() -> None:
    # The recorder predicts the previous label: with alternating labels every
    # prediction is wrong if it is made first, and right if made after learning.
    learner = OnlineLearner(CallRecorder())
    for i in range(10):
        returned = learner.process({"i": i}, i % 2 == 0, topic=T, partition=0, offset=i)
        assert returned == (None if i == 0 else i % 2 == 1)
    m = learner.metrics()
    assert m["accuracy"] == 0.0 and m["rolling_accuracy"] == 0.0
    assert m["n_learned"] == 10


def test_unlabeled_events_are_counted_but_not_learned() -> None:
    model = CallRecorder()
    learner = OnlineLearner(model)
    learner.process({"i": 0}, None, topic=T, partition=1, offset=41)
    learner.process({"i": 1}, False, topic=T, partition=1, offset=42)
    assert model.calls[-1] == ("learn", 1) and ("learn", 0) not in model.calls
    assert learner.n_seen == 2 and learner.n_learned == 1
    assert learner.input_offsets == {f"{T}[1]": 43}


def test_input_offsets_hold_the_next_offset_per_partition_and_never_go_back() -> None:
    learner = OnlineLearner(CallRecorder())
    learner.process({"i": 0}, True, topic=T, partition=0, offset=10)
    learner.process({"i": 1}, True, topic=T, partition=2, offset=5)
    learner.advance(T, 0, 11)  # a skipped record
    learner.advance(T, 0, 3)  # a replay does not move the position back
    assert learner.input_offsets == {f"{T}[0]": 12, f"{T}[2]": 6}


def test_metrics_on_a_learnable_stream() -> None:
    rng = random.Random(3)
    learner = OnlineLearner(catalog.build("logistic"))
    for i in range(3000):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
        learner.process(x, x["a"] + x["b"] > 0, topic=T, partition=0, offset=i)
    m = learner.metrics()
    assert {"accuracy", "rolling_accuracy", "n_learned", "log_loss"} <= set(m)
    assert m["n_learned"] == 3000
    assert m["rolling_accuracy"] > m["accuracy"] > 0.85  # the recent window beats the whole run
    assert 0 < m["log_loss"] < 0.5


def test_resume_continues_the_counters_of_a_published_version() -> None:
    rng = random.Random(5)
    learner = OnlineLearner(catalog.build("logistic"))
    for i in range(500):
        x = {"a": rng.gauss(0, 1)}
        learner.process(x, x["a"] > 0, topic=T, partition=0, offset=i)
    envelope = seal(
        learner.model, model_name="m", version=4, flavor=catalog.FLAVOR,
        metrics=learner.metrics(), n_learned=learner.n_learned, input_offsets=learner.input_offsets,
    )
    resumed = OnlineLearner.resume(learner.model, envelope)
    assert resumed.n_learned == 500 and resumed.input_offsets == {f"{T}[0]": 500}
    for key in ("accuracy", "log_loss", "n_seen"):
        assert resumed.metrics()[key] == pytest.approx(learner.metrics()[key])


class RefusesStrings(CallRecorder):
    """Predicts like the recorder but, like river's Perceptron, cannot learn a string label."""

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        if isinstance(y, str):
            raise TypeError(f"unsupported operand type(s) for -: {type(y).__name__!r} and 'int' ({y!r})")
        super().learn_one(x, y)


def test_an_event_the_model_cannot_learn_changes_no_counter_metric_or_offset() -> None:
    learner = OnlineLearner(RefusesStrings())
    for i in range(4):
        learner.process({"i": i}, i % 2 == 0, topic=T, partition=0, offset=i)
    before = (learner.metrics(), dict(learner.input_offsets), learner.n_seen, learner.n_learned)
    with pytest.raises(TypeError, match="'yes'"):
        learner.process({"i": 4}, "yes", topic=T, partition=0, offset=4)
    # The caller skips the record: nothing of it may be counted as seen, scored or learned.
    assert (learner.metrics(), dict(learner.input_offsets), learner.n_seen, learner.n_learned) == before
    learner.advance(T, 0, 4)  # what the loop does for a skipped record
    learner.process({"i": 5}, True, topic=T, partition=0, offset=5)
    assert learner.n_learned == learner.n_seen == 5 and learner.input_offsets == {f"{T}[0]": 6}


def _concept_flip(learner: OnlineLearner, n: int, flip_at: int, seed: int = 11) -> None:
    """A learnable stream whose concept inverts at ``flip_at``."""
    rng = random.Random(seed)
    for i in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
        y = x["a"] + x["b"] > 0
        learner.process(x, y if i < flip_at else not y, topic=T, partition=0, offset=i)


def test_the_error_rate_rise_at_a_concept_drift_is_detected_and_warm_up_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    learner = OnlineLearner(catalog.build("logistic"))
    _concept_flip(learner, 3000, flip_at=10**9)  # no flip: the error falls while it learns
    assert learner.metrics()["error_rate_rises"] == 0 and "error_rate_rise_at" not in learner.metrics()
    flipped = OnlineLearner(catalog.build("logistic"))
    with caplog.at_level("WARNING", logger="model_publisher.learner"):
        _concept_flip(flipped, 3000, flip_at=2000)
    m = flipped.metrics()
    assert m["error_rate_rises"] >= 1
    assert 2000 < m["error_rate_rise_at"] < 2200  # found within 200 events of the flip
    assert "learner error rate rose to" in caplog.text
    assert caplog.text.count("learner error rate rose") == m["error_rate_rises"]


def test_resume_continues_the_count_of_error_rate_rises() -> None:
    learner = OnlineLearner(catalog.build("logistic"))
    _concept_flip(learner, 2500, flip_at=2000)
    envelope = seal(
        learner.model, model_name="m", version=2, flavor=catalog.FLAVOR,
        metrics=learner.metrics(), n_learned=learner.n_learned, input_offsets=learner.input_offsets,
    )
    resumed = OnlineLearner.resume(learner.model, envelope)
    assert resumed.error_rate_rises == learner.error_rate_rises >= 1
    assert resumed.metrics()["error_rate_rise_at"] == learner.metrics()["error_rate_rise_at"]


def _delayed_dataset(n: int, seed: int = 21) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1), "t": float(i)}
        rows.append((x, x["a"] - x["b"] > 0.3))
    return rows


def test_delayed_labels_give_exactly_rivers_delayed_progressive_validation() -> None:
    from river import evaluate, metrics, stream

    rows = _delayed_dataset(2000)
    delay = 40  # each label arrives 40 events after its features: the model meanwhile learns others

    def features(x: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in x.items() if k != "t"}

    # River in memory: predict at the moment, learn after the delay.
    river_model = catalog.build("logistic")
    expected = evaluate.progressive_val_score(
        [(features(x), y) for x, y in rows], river_model, metrics.Accuracy(), moment=None, delay=delay,
    )
    # Ours, given the same questions and answers in the same order.
    learner = OnlineLearner(catalog.build("logistic"))
    for i, x, y in stream.simulate_qa([(features(x), y) for x, y in rows], moment=None, delay=delay):
        if y is None:
            learner.predict_ahead(f"e{i}", x, topic=T, partition=0, offset=i)
        else:
            learner.process_label(f"e{i}", x, y, topic=f"{T}.labelled", partition=0, offset=i)
    assert learner.metrics()["accuracy"] == pytest.approx(expected.get(), abs=1e-12)
    assert learner.n_learned == 2000 and learner.n_predicted_late == 0
    assert learner.metrics()["n_awaiting_label"] == 0


def test_a_label_without_a_remembered_prediction_is_predicted_late_and_counted() -> None:
    learner = OnlineLearner(catalog.build("logistic"), max_awaiting=2)
    x = {"a": 1.0}
    for i in range(3):
        learner.predict_ahead(f"e{i}", x, topic=T, partition=0, offset=i)
    assert learner.metrics()["n_awaiting_label"] == 2  # the oldest prediction was dropped
    learner.process_label("e0", x, True, topic="l", partition=0, offset=0)  # dropped: predicted now
    learner.process_label("e2", x, True, topic="l", partition=0, offset=1)
    learner.process_label("e9", x, False, topic="l", partition=0, offset=2)  # never seen (before a restart)
    m = learner.metrics()
    assert m["n_predicted_late"] == 2 and m["n_learned"] == 3 and m["n_seen"] == 3
    assert m["n_awaiting_label"] == 1
    assert learner.input_offsets == {f"{T}[0]": 3, "l[0]": 3}


# --- regression ------------------------------------------------------------------------------------------------


def _friedman(n: int, seed: int = 8) -> list[tuple[dict[str, float], float]]:
    from river import datasets

    return [({f"x{k}": float(v) for k, v in x.items()}, y) for x, y in datasets.synth.Friedman(seed=seed).take(n)]


def _learn(learner: OnlineLearner, rows: list[tuple[dict[str, float], Any]], start: int = 0) -> None:
    for i, (x, y) in enumerate(rows, start):
        learner.process(x, y, topic=T, partition=0, offset=i)


@pytest.mark.parametrize("spec", ["linear_regression", "hoeffding_regressor"])
def test_regression_metrics_equal_rivers_progressive_validation(spec: str) -> None:
    from river import evaluate, metrics, utils

    rows = _friedman(3000)
    learner = OnlineLearner(catalog.build(spec))
    _learn(learner, rows)
    m = learner.metrics()
    expected = {
        "mae": metrics.MAE(), "rmse": metrics.RMSE(), "rolling_mae": utils.Rolling(metrics.MAE, window_size=1000),
    }
    for key, metric in expected.items():
        got = evaluate.progressive_val_score(rows, catalog.build(spec), metric).get()
        assert m[key] == pytest.approx(got, rel=1e-9), key
    assert m["n_learned"] == m["n_seen"] == m["n_scored"] == 3000
    assert m["rolling_mae"] < m["mae"]  # it learned: the last 1000 beat the whole run
    assert not {"accuracy", "rolling_accuracy", "log_loss", "error_rate_rises"} & set(m)


def test_resume_continues_the_regression_counters_of_a_published_version() -> None:
    rows = _friedman(1000, seed=9)
    learner = OnlineLearner(catalog.build("linear_regression"))
    _learn(learner, rows[:600])
    envelope = seal(
        learner.model, model_name="m", version=3, flavor=catalog.FLAVOR,
        metrics=learner.metrics(), n_learned=learner.n_learned, input_offsets=learner.input_offsets,
    )
    resumed = OnlineLearner.resume(copy.deepcopy(learner.model), envelope)
    assert resumed.task == "regression" and resumed.n_learned == 600
    _learn(learner, rows[600:], start=600)  # the same events after the publish, for both
    _learn(resumed, rows[600:], start=600)
    for key in ("mae", "rmse", "n_scored", "n_learned", "n_seen"):
        assert resumed.metrics()[key] == pytest.approx(learner.metrics()[key], rel=1e-12), key


def test_delayed_labels_give_rivers_delayed_progressive_validation_for_a_regressor() -> None:
    from river import evaluate, metrics, stream

    rows = _friedman(1500, seed=10)
    expected = evaluate.progressive_val_score(rows, catalog.build("linear_regression"), metrics.MAE(), delay=25)
    learner = OnlineLearner(catalog.build("linear_regression"))
    for i, x, y in stream.simulate_qa(rows, moment=None, delay=25):
        if y is None:
            learner.predict_ahead(f"e{i}", x, topic=T, partition=0, offset=i)
        else:
            learner.process_label(f"e{i}", x, y, topic=f"{T}.labelled", partition=0, offset=i)
    assert learner.metrics()["mae"] == pytest.approx(expected.get(), rel=1e-9)
    assert learner.metrics()["n_awaiting_label"] == 0 and learner.n_predicted_late == 0


class SilentAtFirst(base.Regressor):
    """A river regressor that predicts nothing until it has learned (river skips such a prediction)."""

    def __init__(self) -> None:
        self.last: float | None = None

    def learn_one(self, x: dict[str, float], y: float) -> None:
        self.last = y

    def predict_one(self, x: dict[str, float]) -> float | None:
        return self.last


def test_a_regressor_prediction_of_none_is_learned_but_not_scored() -> None:
    learner = OnlineLearner(SilentAtFirst())
    _learn(learner, [({"a": 1.0}, 2.0), ({"a": 1.0}, 5.0), ({"a": 1.0}, 1.0)])
    m = learner.metrics()
    assert m["n_learned"] == 3 and m["n_scored"] == 2
    assert m["mae"] == pytest.approx((3 + 4) / 2) and m["rmse"] == pytest.approx(((9 + 16) / 2) ** 0.5)


def test_a_label_a_regressor_cannot_take_changes_nothing_not_even_the_model() -> None:
    learner = OnlineLearner(catalog.build("linear_regression"))
    _learn(learner, _friedman(50))
    before = (pickle.dumps(learner.model), learner.metrics(), dict(learner.input_offsets))
    with pytest.raises(ValueError, match="'high'"):
        learner.process({"x0": 0.5}, "high", topic=T, partition=0, offset=50)
    assert (pickle.dumps(learner.model), learner.metrics(), dict(learner.input_offsets)) == before
