"""Batch training on the real broker: snapshot, scikit-learn fit, the quality gate, the registry."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from consumers.subscriber import ModelSubscriber
from model_publisher.batch_training import BatchTrainer
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import ConfigError
from streamml.kafka import make_producer
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.registry import read_history
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Topics
from streamml_cli import cli

pytestmark = pytest.mark.integration

FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))


def constant_classifier() -> Any:
    """A deliberately bad candidate (an import-path spec): always the most frequent class."""
    return DummyClassifier(strategy="most_frequent")


def rows(n: int, *, seed: int, start: int = 0) -> list[tuple[dict[str, float], bool, int]]:
    """``n`` learnable rows (label: a + b > 0) with increasing event times."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        # One-hot style feature present in some rows only: absent must mean 0.0.
        features = {"a": a, "b": b, "noise": rng.random(), **({"car=1": 1.0} if i % 3 == 0 else {})}
        out.append((features, a + b > 0, 1_700_000_000_000 + i))
    return out


def produce(settings: Settings, topics: Topics, data: list[tuple[dict[str, float], bool, int]]) -> None:
    producer = make_producer(settings)
    for features, label, event_time in data:
        key = f"c{event_time % 50}"
        record = {
            "key": key, "event_id": uuid.uuid4().hex, "event_time": event_time, "features": features,
            "label": label, "source_topic": topics.raw_events, "source_partition": 0, "source_offset": 0,
        }
        producer.produce(topics.features, key=key.encode(), value=FEATURES.encode(record), headers=FEATURES.headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def named(settings: Settings, name: str) -> Cluster:
    return Cluster(settings.with_overrides(model_name=name))


def test_a_batch_model_is_scikit_learn_fitted_on_the_same_rows(settings: Settings, topics: Topics) -> None:
    data = rows(1000, seed=3)
    produce(settings, topics, data)
    result = BatchTrainer(named(settings, "loans-batch"), spec="logistic", holdout=0.2).run()
    envelope = result.envelope
    assert envelope is not None and envelope.kind == "batch" and envelope.flavor == "sklearn"
    assert envelope.version == 1 and result.decision is not None and result.decision.promoted
    assert len(result.snapshot) == 1000 and result.metrics["n_train"] == 800
    # Reproducible: the lineage says exactly which records, and they are all of them.
    spans = dict(part.split("=") for part in envelope.lineage["snapshot_offsets"].split(","))
    assert sum(int(b) - int(a) for a, b in (s.split("-") for s in spans.values())) == 1000
    assert envelope.lineage["spec"] == "logistic"
    assert json.loads(envelope.lineage["estimator_params"])["logisticregression__C"] == 1.0

    # The same estimator fitted in memory on the same (time-ordered) rows.
    import pandas

    columns = sorted({k for features, _, _ in data for k in features})
    frame = pandas.DataFrame([[f.get(c, 0.0) for c in columns] for f, _, _ in data], columns=columns)
    labels = [label for _, label, _ in data]
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame[:800], labels[:800])
    expected_accuracy = (reference.predict(frame[800:]) == labels[800:]).mean()
    assert result.metrics["holdout_accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)

    with ModelSubscriber(settings, model_name="loans-batch") as subscriber:
        assert subscriber.wait_for_version(1, timeout=20)
        for features, _, _ in data[800:850]:
            served = subscriber.predict_proba_one(features)
            row = pandas.DataFrame([[features.get(c, 0.0) for c in columns]], columns=columns)
            assert served[True] == pytest.approx(float(reference.predict_proba(row)[0][1]), abs=1e-12)


def test_a_worse_candidate_is_refused_and_consumers_keep_the_champion(settings: Settings, topics: Topics) -> None:
    produce(settings, topics, rows(600, seed=5))
    cluster = named(settings, "loans-batch")
    champion = BatchTrainer(cluster, spec="logistic").run().envelope
    assert champion is not None and champion.version == 1
    produce(settings, topics, rows(300, seed=6, start=600))  # live events after what v1 learned: held back
    bad = BatchTrainer(cluster, spec=f"{__name__}:constant_classifier", gate_events=200, gate_timeout=30).run()
    assert bad.decision is not None and not bad.decision.promoted
    assert bad.decision.n_events == 200 and bad.decision.champion is not None and bad.decision.candidate is not None
    assert bad.decision.candidate < bad.decision.champion - 0.02
    assert bad.envelope is not None and bad.envelope.version == 2 and bad.envelope.lineage["gate"] == "refused"

    history = read_history(cluster)
    assert history.served("loans-batch") == 1
    [withheld] = [r for r in history.versions if r.version == 2]
    assert withheld.authentic and withheld.reason is not None and "quality gate" in withheld.reason
    with ModelSubscriber(settings, model_name="loans-batch") as subscriber:
        assert subscriber.wait_for_version(1, timeout=20)
        assert subscriber.version == 1
        assert any("quality gate" in r.reason for r in subscriber.refused)

    # A good candidate after it is promoted again, and numbering went on.
    produce(settings, topics, rows(300, seed=7, start=900))
    good = BatchTrainer(cluster, spec="logistic", gate_events=200, gate_timeout=30).run()
    assert good.decision is not None and good.decision.promoted and good.envelope is not None
    assert good.envelope.version == 3 and read_history(cluster).served("loans-batch") == 3


def test_train_batch_refuses_the_online_learners_name(settings: Settings, topics: Topics) -> None:
    from model_publisher.publisher import ModelPublisher
    from tests.integration.conftest import small_model

    publisher = ModelPublisher(settings)
    publisher.start()
    publisher.publish(small_model(20), metrics={}, n_learned=20, input_offsets={})
    publisher.close()
    produce(settings, topics, rows(100, seed=1))
    result = CliRunner().invoke(
        cli,
        ["train-batch", "-b", settings.bootstrap_servers, "--namespace", settings.namespace,
         "--model", settings.model_name],
        env={"STREAMML_HOME": str(settings.home)},
    )
    # CliRunner runs the command without main()'s mapping: the error itself says exit 2 and what to do.
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2, result.output
    assert "own name" in str(result.exception) and f"--model {settings.model_name}-batch" in str(result.exception)


def test_train_batch_command_publishes_and_reports_json(settings: Settings, topics: Topics) -> None:
    produce(settings, topics, rows(400, seed=2))
    result = CliRunner().invoke(
        cli,
        ["train-batch", "-b", settings.bootstrap_servers, "--namespace", settings.namespace,
         "--model", "cli-batch", "--to-offsets", ",".join(f"{p}:50" for p in range(settings.partitions)), "--json"],
        env={"STREAMML_HOME": str(settings.home)},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["version"] == 1 and summary["rows"] == 50 * settings.partitions
    assert summary["gate"]["gate"] == "promoted"



def test_a_drop_in_the_champions_live_accuracy_triggers_a_retrain(settings: Settings, topics: Topics) -> None:
    import threading

    from model_publisher.triggers import RetrainTriggers

    produce(settings, topics, rows(600, seed=8))
    cluster = named(settings, "loans-batch")
    trainer = BatchTrainer(cluster, spec="logistic", gate_events=0)
    assert trainer.run().envelope is not None
    triggers = RetrainTriggers(cluster, every=None, metric_drop=0.2, window=100, champion=trainer.champion_model)
    stop = threading.Event()
    found: list[str | None] = []
    waiter = threading.Thread(target=lambda: found.append(triggers.wait(stop)))
    waiter.start()
    try:
        assert triggers.watching.wait(20)
        produce(settings, topics, rows(150, seed=9, start=600))  # the same concept: the baseline
        # The concept flips: the champion's accuracy on live events collapses.
        flipped = [(x, not y, t) for x, y, t in rows(300, seed=10, start=750)]
        produce(settings, topics, flipped)
        waiter.join(30)
    finally:
        stop.set()
        waiter.join(10)
    [reason] = found
    assert reason is not None and reason.startswith("metric drop:"), reason
    retrained = trainer.run(trigger=reason)
    assert retrained.envelope is not None and retrained.envelope.lineage["trigger"] == reason


def test_a_drift_alert_on_the_monitoring_topic_triggers_a_retrain(settings: Settings, topics: Topics) -> None:
    import threading
    import time

    from model_publisher.triggers import RetrainTriggers
    from streamml.monitoring import PROFILE, Alert, MonitoringRecord, encode_record

    triggers = RetrainTriggers(Cluster(settings), every=None, on_drift=True)
    stop = threading.Event()
    found: list[str | None] = []
    waiter = threading.Thread(target=lambda: found.append(triggers.wait(stop)))
    producer = make_producer(settings)

    def profile(window: int, alerts: tuple[Alert, ...]) -> None:
        record = MonitoringRecord(PROFILE, "loans", "test", int(time.time() * 1000), {}, window=window, alerts=alerts)
        key, value = encode_record(record)
        producer.produce(topics.monitoring, key=key, value=value)
        assert producer.flush(10) == 0

    profile(1, (Alert("car", "psi", 0.9, 0.2, "old alarm"),))  # before the wait: must not trigger
    waiter.start()
    try:
        assert triggers.watching.wait(20)
        profile(2, ())
        profile(3, (Alert("car", "psi", 0.42, 0.2, "car drifted"),))
        waiter.join(20)
    finally:
        stop.set()
        waiter.join(10)
    assert found == ["drift: window 3 of loans (car PSI 0.42)"]
