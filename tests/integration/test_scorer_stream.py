"""StreamScorer on a real broker: no predictions without a model, then versioned ones."""

from __future__ import annotations

import random
import threading

import pytest
from click.testing import CliRunner

from consumers import ModelSubscriber, StreamScorer
from model_publisher import catalog
from model_publisher.publisher import ModelPublisher
from streamml.cli import cli
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Topics
from tests.integration.test_models_learner import produce_features

pytestmark = pytest.mark.integration

PREDICTIONS = AvroSerde(bundled_schema("prediction.avsc"))


def _predictions(settings: Settings, topics: Topics) -> list[dict]:
    return [PREDICTIONS.decode(m.value(), m.headers()) | {"_key": m.key()} for m in read_to_end(settings, topics.predictions)]


def _publish_trained(settings: Settings) -> int:
    rng = random.Random(11)
    model = catalog.build("logistic")
    for _ in range(1000):  # the same concept produce_features labels by
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        model.learn_one({"a": a, "b": b, "noise": rng.random()}, a + b > 0)
    publisher = ModelPublisher(settings)
    publisher.start()
    try:
        return publisher.publish(model, metrics={"accuracy": 1.0}, n_learned=200, input_offsets={}).version
    finally:
        publisher.close()


def test_the_scorer_waits_for_a_model_then_writes_versioned_predictions(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 300, unlabeled_every=3)
    scorer = StreamScorer(settings, max_events=300)
    runner = threading.Thread(target=scorer.run)
    runner.start()
    try:
        assert not scorer.subscriber.wait_ready(timeout=2.0)
        assert _predictions(settings, topics) == [] and scorer.report.scored == 0
        assert _publish_trained(settings) == 1
    finally:
        runner.join(timeout=60)
    assert not runner.is_alive()
    predictions = _predictions(settings, topics)
    assert len(predictions) == 300 == scorer.report.scored
    assert {p["model_version"] for p in predictions} == {1} and scorer.report.versions == {1: 300}
    assert {p["model_name"] for p in predictions} == {settings.model_name}
    assert all(p["_key"] == p["key"].encode() for p in predictions)
    labeled = [p for p in predictions if p["label"] is not None]
    assert len(labeled) == 200  # labels copied through, unlabeled ones still scored
    assert all(isinstance(p["prediction"], bool) for p in predictions)
    assert all(set(p["probabilities"]) == {"True", "False"} for p in predictions)
    accuracy = sum(p["prediction"] == p["label"] for p in labeled) / len(labeled)
    assert accuracy > 0.8


def test_predictions_name_the_version_that_made_them_across_a_swap(settings: Settings, topics: Topics) -> None:
    assert _publish_trained(settings) == 1
    produce_features(settings, topics, 100, seed=7)
    with ModelSubscriber(settings) as subscriber:
        first = StreamScorer(settings, subscriber=subscriber, max_events=100).run()
        assert first.versions == {1: 100}
        assert _publish_trained(settings) == 2
        assert subscriber.wait_for_version(2, timeout=15)
        produce_features(settings, topics, 50, seed=8)
        second = StreamScorer(settings, subscriber=subscriber, max_events=50).run()
    assert second.versions == {2: 50}  # resumed after the committed offsets, with the new model
    by_version = {}
    for p in _predictions(settings, topics):
        by_version[p["model_version"]] = by_version.get(p["model_version"], 0) + 1
    assert by_version == {1: 100, 2: 50}


def test_score_command_scores_and_reports_per_version(settings: Settings, topics: Topics) -> None:
    assert _publish_trained(settings) == 1
    produce_features(settings, topics, 120, seed=9)
    args = ["--bootstrap-servers", settings.bootstrap_servers, "--namespace", settings.namespace]
    result = CliRunner().invoke(cli, ["score", *args, "--max-events", "120"])
    assert result.exit_code == 0, result.output
    assert "serving demo-classifier v1 (n_learned=200, accuracy=1.000)" in result.output
    assert "scored 120 records (v1: 120), skipped 0" in result.output
    assert len(_predictions(settings, topics)) == 120
