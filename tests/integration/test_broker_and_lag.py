"""The embedded broker, topic creation, the topic reader and lag, on a real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from streamml.broker import EmbeddedBroker
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import PortInUseError
from streamml.kafka import make_consumer, make_producer
from streamml.lag import consumer_lag, log_end_offsets
from streamml.reader import read_to_end
from streamml.topics import Topics

pytestmark = pytest.mark.integration


def test_create_topics_is_idempotent(settings: Settings) -> None:
    topics = Topics.from_settings(settings)
    first = Cluster(settings).create_topics(topics.specs(settings))
    second = Cluster(settings).create_topics(topics.specs(settings))
    assert set(first.values()) == {"created"}
    assert set(second.values()) == {"exists"}


def test_log_end_is_the_real_end_not_the_last_batch_base(settings: Settings, topics: Topics) -> None:
    producer = make_producer(settings)
    for _ in range(1000):  # one linger window: few batches, so ListOffsets alone would be wrong on Tansu
        producer.produce(topics.raw_events, value=b"x", partition=0)
    assert producer.flush(10) == 0
    ends = log_end_offsets(Cluster(settings), [(topics.raw_events, 0), (topics.raw_events, 1)])
    assert ends == {(topics.raw_events, 0): 1000, (topics.raw_events, 1): 0}


def test_lag_counts_from_the_committed_offset(settings: Settings, topics: Topics) -> None:
    producer = make_producer(settings)
    for i in range(300):
        producer.produce(topics.features, value=b"x", partition=i % 3)
    assert producer.flush(10) == 0
    group = settings.topic("streamml.learner")
    consumer = make_consumer(settings, group)
    consumer.commit(offsets=[TopicPartition(topics.features, 0, 60)], asynchronous=False)
    consumer.close()
    [report] = consumer_lag(Cluster(settings), [group], topics={group: [topics.features]})
    by_partition = {row.partition: row for row in report.partitions}
    assert by_partition[0].committed == 60 and by_partition[0].lag == 40
    assert by_partition[1].committed is None and by_partition[1].lag == 100
    assert report.total == 240


def test_read_to_end_returns_every_record(settings: Settings, topics: Topics) -> None:
    producer = make_producer(settings)
    for i in range(250):
        producer.produce(topics.predictions, key=str(i), value=str(i).encode())
    assert producer.flush(10) == 0
    values = sorted(int(m.value()) for m in read_to_end(Cluster(settings), topics.predictions))
    assert values == list(range(250))
    assert list(read_to_end(Cluster(settings), topics.models)) == []


def test_second_broker_on_a_taken_port_is_refused(bootstrap_servers: str, tmp_path: Path) -> None:
    port = int(bootstrap_servers.rsplit(":", 1)[1])
    # Taken by a process this home did not start: a usage error (choose another port), exit 2.
    with pytest.raises(PortInUseError, match="already in use") as caught:
        EmbeddedBroker(port=port, home=tmp_path).start(timeout=5)
    assert caught.value.exit_code == 2


def test_broker_start_status_stop(tmp_path: Path, unused_port: int) -> None:
    port = unused_port
    broker = EmbeddedBroker(port=port, home=tmp_path)
    broker.start(timeout=30)
    try:
        # A second handle (as 'streamml broker status' in another process) sees it through the state file.
        other = EmbeddedBroker(port=port, home=tmp_path)
        assert other.status().running
        assert other.stop() is True
        assert not broker.status().running
    finally:
        broker.stop()
    assert broker.stop() is False


def test_cli_without_a_broker_says_so_in_one_line(unused_port: int) -> None:
    port = unused_port
    result = subprocess.run(
        [sys.executable, "-m", "streamml_cli", "lag", "-b", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"streamml: error: no Kafka broker answered at 127.0.0.1:{port} within 10s "
        "(Failed to get metadata: Local: Broker transport failure); "
        "start one with 'streamml broker start' or set STREAMML_BOOTSTRAP_SERVERS"
    ]



def test_lag_of_a_group_that_does_not_exist_is_an_error_not_zero(settings: Settings, topics: Topics) -> None:
    group = Cluster(settings).groups.processor
    typo = group.replace("processor", "procesor")

    def lag(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamml_cli", "lag", "-b", settings.bootstrap_servers,
             "--namespace", settings.namespace, "-g", name, "--json", "--samples", "1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )

    wrong = lag(typo)
    assert wrong.returncode == 2 and wrong.stdout == ""
    [line] = wrong.stderr.strip().splitlines()
    assert f"no consumer group {typo!r}" in line and f"did you mean {group}?" in line
    # A component's own group is known before it ever commits: its backlog is its lag.
    right = lag(group)
    assert right.returncode == 0, right.stderr
