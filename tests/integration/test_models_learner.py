"""The learn loop end to end: features in, increasing model versions out."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from model_publisher.learning_loop import LearningLoop, LearnReport
from model_publisher.policy import PublishPolicy
from streamml import envelope as envelope_module
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import ModelEnvelope
from streamml.errors import KafkaClientError, ModelTooLargeError, UnlearnableRecordsError
from streamml.kafka import format_record, make_producer
from streamml.lag import consumer_lag
from streamml.reader import read_to_end
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.registry import read_versions
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Groups, Topics
from streamml_cli import cli
from tests.conftest import eventually

pytestmark = pytest.mark.integration

FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))


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


def run_while_producing(loop: LearningLoop, produce: Callable[[], None]) -> LearnReport:
    """Start ``loop`` on a topic without history, then ``produce`` (live events: no catch-up); return its report."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert loop.caught_up.wait(30), "the loop did not start"
        produce()
        runner.join(timeout=60)
    finally:
        loop.stop.set()
        runner.join(timeout=30)
    if failures:
        raise failures[0]
    return loop.report


def test_learner_publishes_increasing_versions_with_metrics(settings: Settings, topics: Topics) -> None:
    def produce() -> None:
        produce_features(settings, topics, 2200, unlabeled_every=11)  # 200 unlabeled, 2000 labeled
        producer = make_producer(settings)
        producer.produce(topics.features, key=b"c1", value=b"\x07junk", headers=FEATURES.headers)
        assert producer.flush(10) == 0

    published = []
    # The time rule is pushed out of the way so the versions are exactly every 500 learned events.
    policy = PublishPolicy(settings.publish_every_events, 3600)
    loop = LearningLoop(settings, max_events=2201, on_publish=published.append, policy=policy)
    report = run_while_producing(loop, produce)
    assert (report.consumed, report.learned, report.skipped) == (2201, 2000, 1)
    assert report.history == 0 and report.caught_up_version is None
    assert report.published == len(published) == 4
    versions = [e.version for e in published]
    assert versions == [1, 2, 3, 4]
    assert [e.n_learned for e in published] == [500, 1000, 1500, 2000]
    last = published[-1]
    assert {"accuracy", "rolling_accuracy", "n_learned"} <= set(last.metrics)
    assert last.metrics["accuracy"] > 0.85 and last.metrics["rolling_accuracy"] > 0.85
    assert sum(published[0].input_offsets.values()) < sum(last.input_offsets.values()) <= 2201
    assert [r.version for r in read_versions(Cluster(settings))] == versions
    # Offsets were committed for what the published model learned: no lag left.
    [lag] = consumer_lag(Cluster(settings), [Groups.from_settings(settings).learner], topics={})
    assert lag.total == 0 and len(lag.partitions) == 3


def test_a_restarted_learner_resumes_from_the_last_version(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 600, seed=2)
    first = LearningLoop(settings, max_events=600).run()
    assert first.published >= 1 and first.resumed_from is None
    produce_features(settings, topics, 400, seed=3)
    second = LearningLoop(settings, max_events=400).run()
    assert second.resumed_from == first.last_version
    records = read_versions(Cluster(settings))
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
    [record] = read_versions(Cluster(settings))
    assert record.version == 1 and record.summary["n_learned"] == loop.report.learned == 300


def test_learn_command_prints_each_published_version(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 600, seed=5)
    args = ["--bootstrap-servers", settings.bootstrap_servers, "--namespace", settings.namespace]
    result = CliRunner().invoke(
        cli, ["learn", *args, "--max-events", "600", "--publish-every-events", "250", "--publish-every-seconds", "3600"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("published ")]
    # A fresh model on 600 records of history: one version once it caught up, none at 250 or 500.
    assert [line.split(" (")[0] for line in lines] == ["published demo-classifier v1"]
    assert "n_learned=600," in lines[0]
    assert "consumed 600, learned 600, skipped 0, published 1 version(s)" in result.output


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
        "STREAMML_MODEL_SIGNING_KEY_FILE": str(settings.model_signing_key_file),
        "STREAMML_MODEL_TRUSTED_KEYS": settings.model_trusted_keys,
    }
    command = [sys.executable, "-c", "from streamml_cli import main; main()", "learn"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(
            lambda: any(r.version == 1 for r in read_versions(Cluster(settings))),
            timeout=60,
            what="v1 from the learn command (once it caught up on the history)",
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "SIGTERM: stopping" in output and "consumed 300, learned 300" in output


def test_events_learned_after_the_last_publish_are_replayed_not_lost_or_doubled(
    settings: Settings, topics: Topics
) -> None:
    produce_features(settings, topics, 500, seed=10)
    crashing = LearningLoop(settings, max_events=700, policy=PublishPolicy(500, 3600))
    crashing.on_publish = lambda envelope: produce_features(settings, topics, 200, seed=11)  # after v1 (caught up)
    publish = crashing._publisher.publish

    def crash_after_v1(*args: object, **kwargs: object) -> object:
        if crashing.report.published >= 1:
            raise KafkaClientError("simulated crash: the final version never reached the broker")
        return publish(*args, **kwargs)

    crashing._publisher.publish = crash_after_v1  # type: ignore[method-assign]
    with pytest.raises(KafkaClientError, match="simulated crash"):
        crashing.run()
    [v1] = read_versions(Cluster(settings))
    assert v1.summary["n_learned"] == 500 and crashing.report.learned == 700
    # Only what v1 learned was committed; the 200 events after it were not.
    [lag] = consumer_lag(Cluster(settings), [Groups.from_settings(settings).learner], topics={})
    assert lag.total == 200
    restarted = LearningLoop(settings, max_events=200).run()
    assert restarted.resumed_from == 1 and restarted.consumed == 200
    assert read_versions(Cluster(settings))[-1].summary["n_learned"] == 700  # each event learned once by the chain


def _lag(settings: Settings) -> int:
    [lag] = consumer_lag(Cluster(settings), [Groups.from_settings(settings).learner], topics={})
    return lag.total


def _run_until_consumed(loop: LearningLoop, n: int) -> None:
    """Run ``loop`` in a thread until it has consumed ``n`` records, then stop it (and its final publish)."""
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        eventually(lambda: loop.report.consumed >= n, timeout=30, what=f"the learner to consume {n} records")
    finally:
        loop.stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()


@pytest.mark.parametrize("spec", ["logistic", "perceptron"])  # ValueError and TypeError on a string label
def test_a_record_the_model_cannot_learn_is_skipped_and_logged_not_crash_looped(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture, spec: str
) -> None:
    settings = dataclasses.replace(settings, model_spec=spec)
    produce_features(settings, topics, 200, seed=20)
    poison = {
        "key": "c1", "event_id": uuid.uuid4().hex, "event_time": 1_700_000_000_000, "features": {"a": 1.0, "b": 0.5},
        "label": "yes", "source_topic": topics.raw_events, "source_partition": 0, "source_offset": 0,
    }
    producer = make_producer(settings)
    producer.produce(topics.features, key=b"c1", value=FEATURES.encode(poison), headers=FEATURES.headers)
    assert producer.flush(10) == 0
    produce_features(settings, topics, 100, seed=21)
    [where] = [
        format_record(m.topic(), m.partition(), m.offset())
        for m in read_to_end(Cluster(settings), topics.features)
        if FEATURES.decode(m.value(), m.headers())["event_id"] == poison["event_id"]
    ]
    with caplog.at_level(logging.ERROR, logger="model_publisher.learning_loop"):
        report = LearningLoop(settings, max_events=301).run()
    assert (report.consumed, report.learned, report.skipped) == (301, 300, 1)
    assert any(where in r.getMessage() and "'yes'" in r.getMessage() for r in caplog.records)
    assert read_versions(Cluster(settings))[-1].summary["n_learned"] == 300
    assert _lag(settings) == 0  # stepped over and committed: a restart does not meet it again


class Unloadable:
    """Pickles and predicts, but is no class the restricted unpickler may load: every reader refuses it."""

    def predict_one(self, x: dict[str, float]) -> bool:
        return True


def test_a_fallback_to_an_older_version_replays_from_its_offsets_not_the_committed_ones(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    produce_features(settings, topics, 500, seed=22)
    first = LearningLoop(settings, max_events=600, policy=PublishPolicy(500, 3600))
    first.on_publish = lambda envelope: envelope.version == 1 and produce_features(settings, topics, 100, seed=27)
    publish = first._publisher.publish

    def second_version_unloadable(model: object, **kwargs: object) -> object:
        return publish(Unloadable() if first.report.published >= 1 else model, **kwargs)

    first._publisher.publish = second_version_unloadable  # type: ignore[method-assign]
    assert first.run().published == 2
    v1, v2 = read_versions(Cluster(settings))
    assert (v1.summary["n_learned"], v2.summary["n_learned"]) == (500, 600)
    assert _lag(settings) == 0  # the group's offsets are v2's
    produce_features(settings, topics, 100, seed=23)
    second = LearningLoop(settings)
    with caplog.at_level(logging.WARNING, logger="model_publisher.learning_loop"):
        # v1 learned 500 events: the 100 only v2 learned are replayed, then the 100 new ones.
        _run_until_consumed(second, 200)
    assert second.report.resumed_from == 1
    assert (second.report.consumed, second.report.learned) == (200, 200)
    # v1's 500 + 200: nothing skipped, nothing twice
    assert read_versions(Cluster(settings))[-1].summary["n_learned"] == 700
    assert any("not from the newest version v2" in r.getMessage() for r in caplog.records)
    assert _lag(settings) == 0


def test_a_fresh_model_after_a_runtime_change_retrains_from_the_beginning(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce_features(settings, topics, 500, seed=24)
    real_runtime = envelope_module.runtime_info
    with monkeypatch.context() as other_runtime:
        # The first learner ran with another river minor: every version it wrote is refused here.
        other_runtime.setattr(
            envelope_module, "runtime_info", lambda flavor: {**real_runtime(flavor), "river": "0.1.0"}
        )
        first = LearningLoop(settings, max_events=600, policy=PublishPolicy(500, 3600))
        first.on_publish = lambda envelope: envelope.version == 1 and produce_features(settings, topics, 100, seed=28)
        assert first.run().published == 2
    assert [r.status for r in read_versions(Cluster(settings))] == ["refused", "refused"]
    assert _lag(settings) == 0
    produce_features(settings, topics, 100, seed=25)
    fresh = LearningLoop(settings)  # publish_every_events=500: no version at 500, while it catches up
    with caplog.at_level(logging.INFO, logger="model_publisher.learning_loop"):
        _run_until_consumed(fresh, 700)  # not only the 100 after the committed offsets
    assert fresh.report.resumed_from is None
    assert (fresh.report.consumed, fresh.report.learned) == (700, 700)
    assert (fresh.report.history, fresh.report.published, fresh.report.caught_up_version) == (700, 1, 3)
    *refused, newest = read_versions(Cluster(settings))
    assert [r.status for r in refused] == ["refused", "refused"]  # nothing published during the catch-up
    assert newest.version == 3 and newest.status == "ok" and newest.summary["n_learned"] == 700
    assert any("from the beginning" in r.getMessage() and "v2" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage() == "caught up on 700 records of history, publishing v3" for r in caplog.records)


def test_a_model_over_the_size_limit_stops_the_learner_with_one_clear_error(settings: Settings, topics: Topics) -> None:
    produce_features(settings, topics, 500, seed=26)
    loop = LearningLoop(settings, max_events=700, policy=PublishPolicy(500, 3600))

    def model_outgrows_the_limit(_envelope: object) -> None:
        # Stands in for a model that grows (a Hoeffding tree): v1 fits, v2 does not.
        loop._publisher.settings = dataclasses.replace(settings, max_model_total_bytes=500)
        produce_features(settings, topics, 200, seed=29)  # learned after v1 (the catch-up version)

    loop.on_publish = model_outgrows_the_limit
    with pytest.raises(ModelTooLargeError) as raised:
        loop.run()
    message = str(raised.value)
    assert "\n" not in message
    assert f"model {settings.model_name} v2 is " in message and "over the 500-byte limit" in message
    assert "learned 700 events" in message and "no offsets were stored since v1 was published" in message
    assert "STREAMML_MAX_MODEL_TOTAL_BYTES" in message and "--model-spec" in message and "restart" in message
    assert [r.version for r in read_versions(Cluster(settings))] == [1]  # not skipped: nothing after v1 went out
    assert _lag(settings) == 200  # the events v2 would have covered are not committed


def test_a_fresh_model_publishes_nothing_while_it_catches_up_then_one_version_then_its_cadence(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    produce_features(settings, topics, 2200, unlabeled_every=11, seed=30)  # history: 2000 labeled
    published: list[ModelEnvelope] = []

    def on_publish(envelope: ModelEnvelope) -> None:
        published.append(envelope)
        if envelope.version == 1:
            produce_features(settings, topics, 600, seed=31)  # live events after the catch-up

    loop = LearningLoop(settings, max_events=2800, on_publish=on_publish, policy=PublishPolicy(500, 3600))
    with caplog.at_level(logging.INFO, logger="model_publisher.learning_loop"):
        report = loop.run()
    # Every 500 learned events would have made v1..v4 from the history alone; it made one, once caught up.
    assert [(e.version, e.n_learned) for e in published] == [(1, 2000), (2, 2500), (3, 2600)]
    assert (report.history, report.caught_up_version) == (2200, 1)
    assert sum(published[0].input_offsets.values()) == 2200  # v1 had read the whole history
    assert any(r.getMessage() == "caught up on 2200 records of history, publishing v1" for r in caplog.records)


def test_a_fresh_model_stopped_before_it_caught_up_publishes_and_stores_nothing(
    settings: Settings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    produce_features(settings, topics, 1500, seed=32)
    with caplog.at_level(logging.WARNING, logger="model_publisher.learning_loop"):
        report = LearningLoop(settings, max_events=1000, policy=PublishPolicy(500, 3600)).run()
    assert (report.consumed, report.published) == (1000, 0)
    assert read_versions(Cluster(settings)) == []
    group = Groups.from_settings(settings).learner
    [lag] = consumer_lag(Cluster(settings), [group], topics={group: [topics.features]})
    assert lag.total == 1500  # nothing stored: the next start retrains from the beginning
    assert any("stopped while a fresh logistic model was catching up" in r.getMessage() for r in caplog.records)


def _produce_on_one_key(settings: Settings, topics: Topics, labels: list[object]) -> list[str]:
    """Produce records with ``labels`` on one key (one partition, this order); return where each landed.

    A string label is one no linear model can learn.
    """
    where: list[str] = []

    def landed(err: object, msg: Any) -> None:
        where.append(format_record(msg.topic(), msg.partition(), msg.offset()))

    producer = make_producer(settings)
    for i, label in enumerate(labels):
        record = {
            "key": "c1", "event_id": uuid.uuid4().hex, "event_time": 1_700_000_000_000 + i,
            "features": {"a": 1.0, "b": float(i % 2)}, "label": label, "source_topic": topics.raw_events,
            "source_partition": 0, "source_offset": i,
        }
        producer.produce(
            topics.features, key=b"c1", value=FEATURES.encode(record), headers=FEATURES.headers, on_delivery=landed
        )
    assert producer.flush(10) == 0
    return where


def test_a_run_of_records_the_model_cannot_learn_stops_the_learner_with_one_clear_error(
    settings: Settings, topics: Topics
) -> None:
    produce_features(settings, topics, 50, seed=33)
    assert LearningLoop(settings, max_events=50).run().last_version == 1  # caught up: v1
    where = _produce_on_one_key(settings, topics, ["yes"] * 10 + [True] * 50)
    strict = dataclasses.replace(settings, learner_max_consecutive_errors=5)
    with pytest.raises(UnlearnableRecordsError) as raised:
        LearningLoop(strict, max_events=60).run()
    message = str(raised.value)
    assert "\n" not in message and raised.value.exit_code == 1
    assert "the logistic model failed to learn 5 consecutive feature records" in message
    assert f"the first at {where[0]} (ValueError: " in message
    assert "no offsets were stored since v1 was published" in message
    assert [r.version for r in read_versions(Cluster(settings))] == [1]
    assert _lag(settings) == 60  # nothing stored past v1: a fixed learner learns them again


def test_failures_that_are_not_consecutive_do_not_stop_the_learner(settings: Settings, topics: Topics) -> None:
    strict = dataclasses.replace(settings, learner_max_consecutive_errors=2)
    _produce_on_one_key(settings, topics, ["yes", True, "yes", False] * 3)  # never two failures in a row
    report = LearningLoop(strict, max_events=12).run()
    assert (report.consumed, report.learned, report.skipped) == (12, 6, 6)
