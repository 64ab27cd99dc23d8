"""The learner's one-prediction path gives exactly the labels of river's predict_one."""

from __future__ import annotations

import random

import pytest
from river import base, linear_model

from model_publisher import catalog
from model_publisher.catalog import task
from model_publisher.learner import OnlineLearner, predicts_by_argmax

CLASSIFIERS = [name for name in catalog.spec_names() if task(catalog.build(name)) == "classification"]


def _rows(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1), "c": float(rng.randint(0, 3))}
        rows.append((x, x["a"] + 0.5 * x["b"] + rng.gauss(0, 0.5) > 0))
    return rows


@pytest.mark.parametrize("spec", CLASSIFIERS)
def test_labels_from_the_probabilities_equal_river_predict_one_for_every_catalog_classifier(spec: str) -> None:
    learner = OnlineLearner(catalog.build(spec))
    twin = catalog.build(spec)
    for offset, (x, y) in enumerate(_rows(400, seed=7)):
        expected = twin.predict_one(x)
        twin.learn_one(x, y)
        assert learner.process(x, y, topic="f", partition=0, offset=offset) == expected, (spec, offset)


def test_a_classifier_that_overrides_predict_one_is_predicted_with_both_calls() -> None:
    class AlwaysTrue(linear_model.LogisticRegression):
        def predict_one(self, x: dict[str, float], **kwargs: object) -> bool:
            return True

    assert not predicts_by_argmax(AlwaysTrue())
    assert predicts_by_argmax(linear_model.LogisticRegression())
    learner = OnlineLearner(AlwaysTrue())
    x, y = {"a": -5.0}, False
    learner.process(x, y, topic="f", partition=0, offset=0)  # learns "False" for a very negative a
    assert learner.process(x, y, topic="f", partition=0, offset=1) is True


def test_a_regressor_is_not_a_classifier_by_argmax() -> None:
    assert not predicts_by_argmax(linear_model.LinearRegression())
    assert issubclass(linear_model.LogisticRegression, base.Classifier)


def test_the_rolling_accuracy_equals_river_rolling_accuracy() -> None:
    from river import metrics, utils

    from model_publisher.learner import WindowHits

    rng = random.Random(3)
    ours, river_rolling = WindowHits(50), utils.Rolling(metrics.Accuracy, window_size=50)
    assert ours.ratio() == 0.0
    for _ in range(500):
        y, y_pred = rng.random() < 0.5, rng.random() < 0.7
        ours.add(y == y_pred)
        river_rolling.update(y, y_pred)
        assert ours.ratio() == river_rolling.get()
