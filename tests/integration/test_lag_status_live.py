"""The lag verdict on a real broker: lag in time from record timestamps, OK, STALLED then STOPPED."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.lag import consumer_lag, observe_lag
from streamml.lag_status import LagEvaluator, LagStatus
from streamml.topics import Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def _produce(settings: Settings, topic: str, stamps_ms: list[int]) -> None:
    """One record per timestamp, all to partition 0, in order."""
    producer = make_producer(settings)
    for stamp in stamps_ms:
        producer.produce(topic, value=b"x", partition=0, timestamp=stamp)
    assert producer.flush(10) == 0


def test_a_group_that_consumes_and_commits_is_ok_with_lag_zero(settings: Settings, topics: Topics) -> None:
    cluster = Cluster(settings)
    now_ms = int(time.time() * 1000)
    _produce(settings, topics.features, [now_ms - 60_000] * 25)
    group = settings.topic("streamml.healthy")
    consumer = cluster.group_consumer(group, **{"enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topics.features, 0, OFFSET_BEGINNING)])
        read: list[int] = []

        def all_read() -> bool:
            read.extend(m.offset() or 0 for m in consumer.consume(100, 0.2) if not m.error())
            return len(read) == 25

        eventually(all_read, timeout=20, what="25 records consumed")
        consumer.commit(offsets=[TopicPartition(topics.features, 0, read[-1] + 1)], asynchronous=False)
    finally:
        consumer.close()
    evaluator = LagEvaluator(window=3)
    for at in (0.0, 1.0):
        [status] = evaluator.observe(consumer_lag(cluster, [group]), time.time() + at)
    assert status.status is LagStatus.OK and status.total_lag == 0, status
    assert status.max_lag_seconds == 0.0  # lag 0 is 0 s, whatever the records' age


def test_a_group_that_stopped_committing_goes_stalled_then_stopped(settings: Settings, topics: Topics) -> None:
    cluster = Cluster(settings)
    now_ms = int(time.time() * 1000)
    # Records 0-9 are consumed; 10 (stamped 30 s ago) and the rest wait: lag in time is record 10's age.
    _produce(settings, topics.features, [now_ms - 90_000] * 10 + [now_ms - 30_000] + [now_ms - 1_000] * 9)
    group = settings.topic("streamml.paused")
    consumer = cluster.group_consumer(group)
    consumer.commit(offsets=[TopicPartition(topics.features, 0, 10)], asynchronous=False)
    consumer.close()

    evaluator = LagEvaluator(window=3, stopped_after_seconds=1.5)
    seen: list[LagStatus] = []

    def judged(status: LagStatus) -> bool:
        [verdict] = evaluator.observe(observe_lag(cluster, group), time.time())
        seen.append(verdict.status)
        assert verdict.total_lag == 10, verdict
        age = verdict.partitions[0].lag_seconds
        assert age is not None and 30 <= age < 45, verdict  # the oldest unconsumed record, not the newest
        return verdict.status is status

    eventually(lambda: judged(LagStatus.STOPPED), timeout=15, interval=0.3, what="STOPPED")
    assert seen[0] is LagStatus.OK  # one observation: not enough to judge
    assert LagStatus.STALLED in seen  # same offset over the window before the stopped time passed
