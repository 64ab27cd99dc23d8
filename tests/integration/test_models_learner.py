"""The learn loop end to end: features in, increasing model versions out."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid

import pytest
from click.testing import CliRunner

from model_publisher.learning_loop import LearningLoop
from model_publisher.policy import PublishPolicy
from streamml.cli import cli
from streamml.config import Settings
from streamml.errors import KafkaClientError
from streamml.kafka import make_producer
from streamml.lag import consumer_lag
from streamml.registry import read_versions
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Groups, Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration

FEATURES = AvroSerde(bundled_schema("feature_vector.avsc"))


def produce_features(settings: Settings, topics: Topics, n: int, *, unlabeled_every: int = 0, seed: int = 1) -> None:
    """Produce ``n`` FeatureVector records whose label is learnable (a + b > 0)."""
    rng = random.Random(seed)
    producer = make_producer(settings)
    for i in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        label = None if unlabeled_every and i % unlabeled_every == 0 else a + b > 0
        key = f"c{i % 50}"
        record = {
            "key": key,
            "event_id": uuid.uuid4().hex,
            "event_time": 1_700_000_000_000 + i,
            "features": {"a": a, "b": b, "noise": rng.random()},
            "label": label,
            "source_topic": topics.raw_events,
            "source_partition": 0,
            "source_offset": i,
        }
        producer.produce(topics.features, key=key.encode(), value=FEATURES.encode(record), headers=FEATURES.headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_learner_publishes_increasing_versions_with_metrics(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 2200, unlabeled_every=11)  # 200 unlabeled, 2000 labeled
    producer = make_producer(settings)
    producer.produce(topics.features, key=b"c1", value=b"\x07junk", headers=FEATURES.headers)
    assert producer.flush(10) == 0
    published = []
    # The time rule is pushed out of the way so the versions are exactly every 500 learned events.
    policy = PublishPolicy(settings.publish_every_events, 3600)
    loop = LearningLoop(settings, max_events=2201, on_publish=published.append, policy=policy)
    report = loop.run()
    assert (report.consumed, report.learned, report.skipped) == (2201, 2000, 1)
    assert report.published == len(published) == 4
    versions = [e.version for e in published]
    assert versions == [1, 2, 3, 4]
    assert [e.n_learned for e in published] == [500, 1000, 1500, 2000]
    last = published[-1]
    assert {"accuracy", "rolling_accuracy", "n_learned"} <= set(last.metrics)
    assert last.metrics["accuracy"] > 0.85 and last.metrics["rolling_accuracy"] > 0.85
    assert sum(published[0].input_offsets.values()) < sum(last.input_offsets.values()) <= 2201
    assert [r.version for r in read_versions(settings)] == versions
    # Offsets were committed for what the published model learned: no lag left.
    [lag] = consumer_lag(settings, [Groups.from_settings(settings).learner], topics={})
    assert lag.total == 0 and len(lag.partitions) == 3


def test_a_restarted_learner_resumes_from_the_last_version(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 600, seed=2)
    first = LearningLoop(settings, max_events=600).run()
    assert first.published >= 1 and first.resumed_from is None
    produce_features(settings, topics, 400, seed=3)
    second = LearningLoop(settings, max_events=400).run()
    assert second.resumed_from == first.last_version
    records = read_versions(settings)
    assert records[-1].version == first.last_version + second.published
    assert records[-1].summary["n_learned"] == 1000  # counted on from the resumed version, nothing twice


def test_the_learner_stops_cleanly_when_asked(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 300, seed=4)
    stop = threading.Event()
    loop = LearningLoop(settings, stop=stop)
    runner = threading.Thread(target=loop.run)
    runner.start()
    eventually(lambda: loop.report.consumed >= 300, timeout=30, what="the learner to consume every record")
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    # 300 learned < publish_every_events: only the shutdown publish made a version.
    [record] = read_versions(settings)
    assert record.version == 1 and record.summary["n_learned"] == loop.report.learned == 300


def test_learn_command_prints_each_published_version(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 600, seed=5)
    args = ["--bootstrap-servers", settings.bootstrap_servers, "--namespace", settings.namespace]
    result = CliRunner().invoke(
        cli, ["learn", *args, "--max-events", "600", "--publish-every-events", "250", "--publish-every-seconds", "3600"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("published ")]
    assert [line.split(" (")[0] for line in lines] == [
        "published demo-classifier v1", "published demo-classifier v2", "published demo-classifier v3",
    ]
    assert "n_learned=250," in lines[0] and "n_learned=600," in lines[2]
    assert "consumed 600, learned 600, skipped 0, published 3 version(s)" in result.output


def test_learn_command_rejects_an_unknown_model_spec(settings: Settings) -> None:
    result = CliRunner().invoke(
        cli, ["learn", "--bootstrap-servers", settings.bootstrap_servers, "--model-spec", "forest"]
    )
    assert result.exit_code != 0 and "unknown model spec 'forest'" in str(result.exception)


def test_sigterm_stops_the_learn_command_cleanly(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 300, seed=6)
    env = {
        **os.environ,
        "STREAMML_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMML_NAMESPACE": settings.namespace,
        "STREAMML_PUBLISH_EVERY_EVENTS": "100",
        "STREAMML_PUBLISH_EVERY_SECONDS": "3600",
    }
    command = [sys.executable, "-c", "from streamml.cli import main; main()", "learn"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(
            lambda: any(r.version == 3 for r in read_versions(settings)), timeout=60, what="v3 from the learn command"
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM: stopping" in output and "consumed 300, learned 300" in output


def test_events_learned_after_the_last_publish_are_replayed_not_lost_or_doubled(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 700, seed=10)
    crashing = LearningLoop(settings, max_events=700, policy=PublishPolicy(500, 3600))
    publish = crashing._publisher.publish

    def crash_after_v1(*args: object, **kwargs: object) -> object:
        if crashing.report.published >= 1:
            raise KafkaClientError("simulated crash: the final version never reached the broker")
        return publish(*args, **kwargs)

    crashing._publisher.publish = crash_after_v1  # type: ignore[method-assign]
    with pytest.raises(KafkaClientError, match="simulated crash"):
        crashing.run()
    [v1] = read_versions(settings)
    assert v1.summary["n_learned"] == 500 and crashing.report.learned == 700
    # Only what v1 learned was committed; the 200 events after it were not.
    [lag] = consumer_lag(settings, [Groups.from_settings(settings).learner], topics={})
    assert lag.total == 200
    restarted = LearningLoop(settings, max_events=200).run()
    assert restarted.resumed_from == 1 and restarted.consumed == 200
    assert read_versions(settings)[-1].summary["n_learned"] == 700  # each event learned once by the chain
