"""``streamml process``: a clean stop commits all it emitted; a replay after SIGKILL is identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.lag import consumer_lag
from streamml.reader import read_to_end
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.serde import AvroSchema, AvroSerde, bundled_schema
from streamml.topics import Groups, Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")
T0 = 1_700_000_000_000
FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))


def _produce(settings: Settings, topics: Topics, first: int, last: int, keys: int = 40) -> None:
    serde = AvroSerde(AvroSchema.from_file(settings.schema_path))
    producer = make_producer(settings)
    for i in range(first, last):
        customer = f"c{i % keys}"
        event = {
            "event_id": f"e{i}", "customer_id": customer, "event_time": T0 + i * 10, "salary": 50000.0,
            "commission": 1000.0, "age": 40, "elevel": 2, "car": 3, "zipcode": 4, "hvalue": 200000.0,
            "hyears": 5, "loan": 1000.0 + i * 0.37, "label": i % 2,
        }
        producer.produce(topics.raw_events, key=customer.encode(), value=serde.encode(event), headers=serde.headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def _start(settings: Settings) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env["STREAMML_SESSION_TIMEOUT_MS"] = str(settings.session_timeout_ms)
    return subprocess.Popen(
        [str(STREAMML), "process", "--bootstrap-servers", settings.bootstrap_servers,
         "--namespace", settings.namespace],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _vectors(settings: Settings, topics: Topics) -> list[dict]:
    return [FEATURES.decode(m.value(), m.headers()) for m in read_to_end(Cluster(settings), topics.features)]


def _wait_distinct(settings: Settings, topics: Topics, n: int, process: subprocess.Popen[str]) -> list[dict]:
    def done() -> list[dict] | None:
        if process.poll() is not None:
            raise AssertionError(f"processor exited early ({process.returncode})")
        vectors = _vectors(settings, topics)
        return vectors if len({v["event_id"] for v in vectors}) >= n else None

    return eventually(done, timeout=180, interval=0.2, what=f"{n} distinct feature vectors")


def _stop(process: subprocess.Popen[str], sig: signal.Signals = signal.SIGINT) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return code, process.stdout.read() if process.stdout else ""


def test_a_clean_stop_commits_everything_it_emitted_and_a_restart_emits_nothing(
    settings: Settings, topics: Topics
) -> None:
    n = 5000
    _produce(settings, topics, 0, n)
    process = _start(settings)
    try:
        _wait_distinct(settings, topics, n, process)
    finally:
        code, log = _stop(process)
    assert code == 0, log
    group = Groups.from_settings(settings).processor
    [lag] = consumer_lag(Cluster(settings), [group], topics={group: [topics.raw_events]})
    emitted: dict[int, int] = {}
    for vector in _vectors(settings, topics):
        p = vector["source_partition"]
        emitted[p] = max(emitted.get(p, 0), vector["source_offset"] + 1)
    assert {p.partition: p.committed for p in lag.partitions} == {p.partition: p.log_end for p in lag.partitions}
    assert emitted == {p.partition: p.committed for p in lag.partitions}, lag.as_dict()

    # A restart finds nothing to do: one new event comes out, nothing else.
    _produce(settings, topics, n, n + 1)
    process = _start(settings)
    try:
        vectors = _wait_distinct(settings, topics, n + 1, process)
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert len(vectors) == n + 1, f"{len(vectors) - n - 1} records emitted again after a clean stop"


def test_a_replay_after_sigkill_gets_the_features_of_its_first_emission(settings: Settings, topics: Topics) -> None:
    n = 20_000
    _produce(settings, topics, 0, n)
    process = _start(settings)
    try:
        eventually(lambda: len(_vectors(settings, topics)) >= n // 4, timeout=120, interval=0.05, what="progress")
    finally:
        process.kill()  # SIGKILL mid-stream: no final commit
        process.wait()
    process = _start(settings)
    try:
        vectors = _wait_distinct(settings, topics, n, process)
    finally:
        code, log = _stop(process)
    assert code == 0, log
    first: dict[str, dict] = {}
    differing = [v["event_id"] for v in vectors if first.setdefault(v["event_id"], v) != v]
    assert differing == [], f"{len(differing)} replays differ from their first emission, e.g. {differing[:3]}"
    assert sorted(int(e[1:]) for e in first) == list(range(n)), "lost"
