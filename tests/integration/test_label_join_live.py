"""The delayed-label join in ``streamml process`` on the real broker.

Events go in without labels; labels come on ``labels.v1`` keyed by event id,
some before their events, some twice, some for events that never come, and
some events never get one. Every labelled event must come out on
``features.labelled.v1`` exactly once, with its label and the very features
the stream computed for it; the rest must be counted (duplicates, unmatched
labels, features expired unlabelled). A worker killed with SIGKILL after its
inputs were committed must join from the table it recovers from its
changelog, not from replayed inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer, record_headers
from streamml.lag import consumer_lag
from streamml.monitoring import LABELS, decode_record
from streamml.reader import read_to_end
from streamml.records import FeatureVector, LabelRecord, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Groups, Topics
from tests.conftest import eventually
from tests.integration.test_drift_live import _cli
from tests.integration.test_processor import STREAMML, _event, _stop

pytestmark = pytest.mark.integration

TTL_SECONDS = 6


def _start(settings: Settings, ttl_seconds: float = TTL_SECONDS) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(
        STREAMML_LOG_LEVEL="INFO",
        STREAMML_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        STREAMML_LABEL_MODE="delayed",
        STREAMML_LABEL_TTL_SECONDS=str(ttl_seconds),
    )
    return subprocess.Popen(
        [str(STREAMML), "process", "-b", settings.bootstrap_servers, "--namespace", settings.namespace],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _send_events(settings: Settings, topics: Topics, ids: list[int]) -> None:
    serde = AvroSerde(AvroSchema.from_file(settings.schema_path))
    now = int(time.time() * 1000)
    producer = make_producer(settings)
    for i in ids:
        event = _event(i, f"c{i % 5}", label=None, event_time=now - 1000 + i)
        producer.produce(topics.raw_events, key=event["customer_id"].encode(), value=serde.encode(event),
                         headers=serde.headers)
    assert producer.flush(30) == 0


def _send_labels(settings: Settings, topics: Topics, labels: list[tuple[int, int]]) -> None:
    codec = RecordCodec(LabelRecord)
    # make_producer partitions with murmur2, as aiokafka does the features waiting by event id.
    producer = make_producer(settings)
    for i, label in labels:
        value = codec.encode(LabelRecord(event_id=f"e{i}", label=label, label_time=int(time.time() * 1000)))
        producer.produce(topics.labels, key=f"e{i}".encode(), value=value, headers=codec.headers)
    assert producer.flush(30) == 0


def _joined(cluster: Cluster, topics: Topics) -> list[FeatureVector]:
    codec = RecordCodec(FeatureVector)
    return [codec.decode(m.value(), record_headers(m)) for m in read_to_end(cluster, topics.features_labelled)]


def _label_counts(cluster: Cluster, topics: Topics) -> dict[str, Any] | None:
    reports = [decode_record(m.value()) for m in read_to_end(cluster, topics.monitoring)]
    labels = [r for r in reports if r.kind == LABELS]
    return labels[-1].fields if labels else None


def test_labels_join_once_in_any_order_and_the_rest_is_counted(settings: Settings, topics: Topics) -> None:
    cluster = Cluster(settings)
    early = [(i, i % 2) for i in range(0, 10)]  # labels before their events
    _send_labels(settings, topics, early)
    _send_events(settings, topics, list(range(0, 40)))  # e30..e39 never get a label
    process = _start(settings)
    try:
        eventually(lambda: len(list(read_to_end(cluster, topics.features))) >= 40, timeout=90, what="40 features")
        late = [(i, i % 2) for i in range(10, 30)]
        duplicates = [(i, i % 2) for i in range(5, 15)]  # a second label, before and after the join
        orphans = [(i, 1) for i in range(1000, 1004)]  # labels of events that never come
        _send_labels(settings, topics, late + duplicates + orphans)
        joined = eventually(lambda: (j := _joined(cluster, topics)) and len(j) >= 30 and j, timeout=60,
                            what="30 joined vectors")
        counts = eventually(
            lambda: (c := _label_counts(cluster, topics)) and c["counts"]["expired_unlabelled"] >= 10
            and c["counts"]["unmatched_labels"] >= 4 and c,
            timeout=TTL_SECONDS * 4 + 30, what="expiry counts",
        )
    finally:
        code, log = _stop(process)
    assert code == 0, log
    features = {v.event_id: v for v in (RecordCodec(FeatureVector).decode(m.value(), record_headers(m))
                                        for m in read_to_end(cluster, topics.features))}
    assert len(features) == 40 and all(v.label is None for v in features.values())
    assert sorted(v.event_id for v in joined) == sorted(f"e{i}" for i in range(30))  # each once
    for vector in joined:
        i = int(vector.event_id[1:])
        assert vector.label == i % 2
        stream = features[vector.event_id]
        assert vector.features == stream.features and vector.event_time == stream.event_time
        assert vector.source_offset == stream.source_offset
    c = counts["counts"]
    assert c["joined"] == 30 and c["joined_label_first"] >= 10
    assert c["duplicate_labels"] == 10
    assert c["expired_unlabelled"] == 10 and c["unmatched_labels"] == 4
    assert counts["waiting"] == {"features": 0, "label": 0}
    shown = _cli(settings, "drift", "--json")
    assert shown.returncode == 0, shown.stderr
    [join_report] = json.loads(shown.stdout)["label_joins"]
    assert join_report["counts"] == c


def test_a_killed_worker_joins_from_the_table_it_recovers(settings: Settings, topics: Topics) -> None:
    cluster = Cluster(settings)
    _send_events(settings, topics, list(range(20)))
    process = _start(settings, ttl_seconds=600)  # the restart must not outlast the features' wait
    group = Groups.from_settings(settings).processor
    try:
        def committed_all() -> bool:
            assert process.poll() is None, "the processor stopped"
            [lag] = consumer_lag(cluster, [group], topics={group: [topics.raw_events, topics.features_by_event]})
            rows = [r for r in lag.partitions if r.topic in (topics.raw_events, topics.features_by_event)]
            return lag.total == 0 and sum(r.log_end for r in rows) >= 40

        eventually(committed_all, timeout=90, interval=0.5, what="the events and the waiting features committed")
        process.send_signal(signal.SIGKILL)  # no clean stop: the state must come from the changelog
        process.wait(timeout=10)
        _send_labels(settings, topics, [(i, 1) for i in range(20)])
        process = _start(settings, ttl_seconds=600)
        joined = eventually(lambda: (j := _joined(cluster, topics)) and len(j) >= 20 and j, timeout=90,
                            what="20 joined vectors after the restart")
        counts = eventually(lambda: _label_counts(cluster, topics), timeout=30, what="a label report")
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert sorted(v.event_id for v in joined) == sorted(f"e{i}" for i in range(20))
    assert counts["counts"]["duplicate_features"] == 0  # nothing replayed: the table was recovered
    assert counts["counts"]["joined"] == 20
