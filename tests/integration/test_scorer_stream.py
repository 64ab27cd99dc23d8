"""StreamScorer on a real broker: no predictions without a model, then versioned ones."""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from consumers import ModelSubscriber, StreamScorer
from model_publisher import catalog
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import format_record, make_producer
from streamml.lag import consumer_lag
from streamml.reader import read_to_end
from streamml.records import PREDICTION_SCHEMA
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Groups, Topics
from streamml_cli import cli
from tests.conftest import eventually
from tests.integration.test_models_learner import FEATURES, produce_features

pytestmark = pytest.mark.integration

PREDICTIONS = AvroSerde(bundled_schema(PREDICTION_SCHEMA))


def _predictions(settings: Settings, topics: Topics) -> list[dict]:
    return [
        PREDICTIONS.decode(m.value(), m.headers()) | {"_key": m.key()}
        for m in read_to_end(Cluster(settings), topics.predictions)
    ]


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


class _Message:
    """The part of a confluent_kafka Message the scorer reads before a model is ready."""

    def __init__(self, partition: int, offset: int, *, error: object = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def topic(self) -> str:
        return "features.v1"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> object:
        return self._error


class _PositionTracker:
    """A consumer stand-in that keeps the fetch position seek() leaves per partition."""

    def __init__(self) -> None:
        self.position: dict[int, int] = {}
        self.paused: set[int] = set()

    def seek(self, tp: Any) -> None:
        self.position[tp.partition] = tp.offset

    def pause(self, tps: list[Any]) -> None:
        self.paused.update(tp.partition for tp in tps)


def test_records_that_slip_through_before_a_model_is_loaded_are_all_put_back() -> None:
    # One consume() returned several records of a partition: the position must
    # go back to the first of them, or the others are never scored.
    slipped = [
        _Message(0, 5), _Message(0, 6), _Message(1, 9), _Message(0, 7), _Message(1, 8), _Message(2, 0, error="x")
    ]
    consumer = _PositionTracker()
    StreamScorer._hold_back(consumer, slipped)
    assert consumer.position == {0: 5, 1: 8}
    assert consumer.paused == {0, 1}


class PickyModel:
    """Scores the concept produce_features labels by, but raises on a feature it does not know."""

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        if "boom" in x:
            raise ValueError(f"unknown feature 'boom' = {x['boom']}")
        p = 0.9 if x["a"] + x["b"] > 0 else 0.1
        return {True: p, False: 1 - p}

    def predict_one(self, x: dict[str, float]) -> bool:
        proba = self.predict_proba_one(x)
        return proba[True] > proba[False]


def test_a_record_the_model_cannot_score_is_skipped_and_logged_not_predicted(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    # PickyModel is no river class: readers must be told to trust it explicitly.
    settings = dataclasses.replace(settings, model_pickle_allow=f"{__name__}:PickyModel")
    publisher = ModelPublisher(settings)
    publisher.start()
    publisher.publish(PickyModel(), metrics={}, n_learned=0, input_offsets={})
    publisher.close()
    produce_features(settings, topics, 60, seed=12)
    producer = make_producer(settings)
    poison_ids = []
    for i in range(2):
        poison_ids.append(uuid.uuid4().hex)
        record = {
            "key": "c1", "event_id": poison_ids[-1], "event_time": 1_700_000_000_000, "features": {"boom": float(i)},
            "label": "yes", "source_topic": topics.raw_events, "source_partition": 0, "source_offset": i,
        }
        producer.produce(topics.features, key=b"c1", value=FEATURES.encode(record), headers=FEATURES.headers)
    assert producer.flush(10) == 0
    produce_features(settings, topics, 40, seed=13)
    positions = [
        format_record(m.topic(), m.partition(), m.offset())
        for m in read_to_end(Cluster(settings), topics.features)
        if FEATURES.decode(m.value(), m.headers())["event_id"] in poison_ids
    ]
    with caplog.at_level(logging.ERROR, logger="consumers.scorer"):
        report = StreamScorer(settings, max_events=100).run()
    assert (report.scored, report.skipped) == (100, 2)
    predictions = _predictions(settings, topics)
    assert len(predictions) == 100 and not {p["event_id"] for p in predictions} & set(poison_ids)
    assert len(positions) == 2 and all(
        any(where in r.getMessage() and "ValueError" in r.getMessage() for r in caplog.records) for where in positions
    )
    # Stepped over, not replayed: the scorer's committed offsets are past the poison records.
    group = Groups.from_settings(settings).scorer
    eventually(
        lambda: consumer_lag(Cluster(settings), [group], topics={})[0].total == 0,
        timeout=15,
        what="the scorer's offsets at the end",
    )
