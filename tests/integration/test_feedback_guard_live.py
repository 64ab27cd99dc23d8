"""The feedback guard on a real broker: predictions never flow back into training unless allowed.

The scorer's real predictions are the model outputs here: they carry the
version that made them, the learner refuses their topic at start (exit 2,
one line naming the setting), refuses a source whose first records are
predictions, and at run time steps over (and counts) records carrying a
model version instead of learning them.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from consumers import StreamScorer
from model_publisher import catalog
from model_publisher.learning_loop import ALLOW_SETTING, LearningLoop
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import ConfigError
from streamml.kafka import make_producer
from streamml.reader import read_to_end
from streamml.records import FeatureVector, Prediction, RecordCodec
from streamml.topics import Topics
from tests.integration.test_models_learner import produce_features

pytestmark = pytest.mark.integration

STREAMML = str(Path(sys.executable).with_name("streamml"))
FEATURES = RecordCodec(FeatureVector)
PREDICTIONS = RecordCodec(Prediction)


def _publish(settings: Settings) -> int:
    rng = random.Random(3)
    model = catalog.build("logistic")
    for _ in range(300):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        model.learn_one({"a": a, "b": b, "noise": rng.random()}, a + b > 0)
    publisher = ModelPublisher(settings)
    publisher.start()
    try:
        return publisher.publish(model, metrics={}, n_learned=300, input_offsets={}).version
    finally:
        publisher.close()


def _scored(settings: Settings, topics: Topics, n: int) -> list[Prediction]:
    """Score ``n`` fresh feature vectors with the newest version; return the predictions topic's records."""
    produce_features(settings, topics, n, seed=4)
    StreamScorer(settings, max_events=n).run()
    return [PREDICTIONS.decode(m.value(), m.headers()) for m in read_to_end(Cluster(settings), topics.predictions)]


def _learn(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")} | settings.to_env()
    return subprocess.run(
        [STREAMML, "learn", *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_the_learner_refuses_the_predictions_topic_and_records_made_by_a_model(
    settings: Settings, topics: Topics
) -> None:
    version = _publish(settings)
    predictions = _scored(settings, topics, 50)
    # Every prediction keeps the version that made it: later labels can be attributed to it.
    assert len(predictions) == 50 and {p.model_version for p in predictions} == {version}

    # By name: `streamml learn --topic <predictions>` is one line and exit 2, before any learning.
    done = _learn(settings, "--topic", topics.predictions, "--max-events", "10")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done
    assert len(lines) == 1 and f"refusing to learn from {topics.predictions}" in lines[0], lines
    assert f"{ALLOW_SETTING}=true" in lines[0] and "learning" not in done.stdout

    # By content: a topic that is not named like predictions, whose first records are predictions.
    copied = f"{settings.namespace}copied-predictions.v1"
    Cluster(settings).create_topics([dataclasses.replace(topics.specs(settings)[3], name=copied)])
    producer = make_producer(settings)
    for p in predictions[:5]:
        producer.produce(copied, key=b"k", value=PREDICTIONS.encode(p), headers=PREDICTIONS.headers)
    assert producer.flush(10) == 0
    with pytest.raises(ConfigError, match=rf"{copied}\[\d\]@0 carries a model version: a Prediction record"):
        LearningLoop(settings, topic=copied, max_events=5).run()

    # Allowed explicitly: the start-up check passes (with a warning), nothing is refused by name.
    allowed = dataclasses.replace(settings, learner_allow_prediction_source=True)
    LearningLoop(allowed, topic=topics.predictions).check_sources()


def test_at_run_time_records_carrying_a_model_version_are_counted_not_learned(
    settings: Settings, topics: Topics
) -> None:
    # An empty source passes the start-up check; the model outputs come later, mixed in.
    loop = LearningLoop(settings, max_events=60)
    loop.check_sources()
    producer = make_producer(settings)
    rng = random.Random(8)
    fed_back = 0
    for i in range(60):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        features = {"a": a, "b": b}
        headers = FEATURES.headers
        value: bytes
        if i % 10 == 3:  # a prediction written to the features topic
            value = PREDICTIONS.encode(
                Prediction("k", uuid.uuid4().hex, i, settings.model_name, 4, True, {}, True, i)
            )
            headers, fed_back = PREDICTIONS.headers, fed_back + 1
        else:
            if i % 10 == 6:  # a prediction featurized and fed back
                features["model_version"], fed_back = 4.0, fed_back + 1
            value = FEATURES.encode(
                FeatureVector("k", uuid.uuid4().hex, i, features, a + b > 0, topics.raw_events, 0, i)
            )
        producer.produce(topics.features, key=b"k", value=value, headers=headers)
    assert producer.flush(10) == 0
    report = loop.run()
    assert (report.consumed, report.refused, report.skipped) == (60, fed_back, 0)
    assert report.learned == 60 - fed_back
