"""The producer's per-record path without a broker: report serving, queue-full waits, the run's start.

The client points at a port where nothing listens (a real librdkafka client,
no mock), so records can only wait or time out.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import producers.app
import producers.runner
from producers import EventProducer, SyntheticSource
from producers.app import POLL_EVERY
from producers.rows import Row, numbered_rows
from streamml.config import Settings
from streamml.errors import KafkaClientError
from streamml.kafka import QUEUE_FULL_WAIT


@pytest.fixture
def record() -> dict[str, Any]:
    return dict(next(iter(SyntheticSource(1, seed=1))))


class CountingClient:
    """Wraps the real client, counting polls and refusing the first ``full`` produce calls as a full queue."""

    def __init__(self, client: Any, full: int = 0) -> None:
        self.client = client
        self.full = full
        self.polls: list[float] = []
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, **kwargs: Any) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.produced.append({"topic": topic, "value": value, "key": key, **kwargs})
        self.client.produce(topic, value, key, **kwargs)

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return int(self.client.poll(0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def counting(producer: EventProducer, full: int = 0) -> CountingClient:
    client = CountingClient(producer._producer, full)
    producer._producer = client  # type: ignore[assignment]
    producer._queue = client.produce  # type: ignore[assignment]
    return client


def test_delivery_reports_are_served_every_poll_every_records(dead_settings: Settings, record: dict[str, Any]) -> None:
    producer = EventProducer(dead_settings, client_config={"log_level": 0})
    client = counting(producer)
    for _ in range(POLL_EVERY - 1):
        producer.send(record)
    assert client.polls == []
    producer.send(record)
    assert client.polls == [0]
    for _ in range(POLL_EVERY):
        producer.send(record)
    assert client.polls == [0, 0]
    assert producer.stats.sent == 2 * POLL_EVERY


def test_every_record_carries_the_schema_headers_key_and_its_own_report(
    dead_settings: Settings, record: dict[str, Any]
) -> None:
    producer = EventProducer(dead_settings, client_config={"log_level": 0})
    client = counting(producer)
    producer.send(record)
    producer.send(record, key="explicit")
    producer.send_raw(b"\x00", key=None, headers=[("x", b"1")])
    first, second, raw = client.produced
    assert first["headers"] == producer.serde.headers and second["headers"] == producer.serde.headers
    assert (first["key"], second["key"], raw["key"]) == (record["customer_id"].encode(), b"explicit", None)
    assert raw["headers"] == [("x", b"1")]
    assert first["value"] == producer.serde.encode(record)
    assert {id(p["on_delivery"].__func__) for p in client.produced} == {id(EventProducer._on_delivery)}


def test_a_full_queue_is_waited_out_and_the_record_sent(dead_settings: Settings, record: dict[str, Any]) -> None:
    producer = EventProducer(dead_settings, client_config={"log_level": 0})
    client = counting(producer, full=2)
    producer.send(record)
    assert client.polls == [QUEUE_FULL_WAIT] * 2
    assert len(client.produced) == 1 and producer.stats.sent == 1


def test_connect_gives_up_within_its_timeout_on_a_dead_broker(dead_settings: Settings) -> None:
    producer = EventProducer(dead_settings, client_config={"log_level": 0})
    started = time.monotonic()
    assert producer.connect(timeout=0.3) is False
    assert time.monotonic() - started < 2.0


def test_a_run_starts_its_producer_with_the_quick_reconnect_and_connects_first(
    dead_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs: list[dict[str, Any]] = []
    connects: list[float] = []
    real = producers.app.make_producer

    def spy(settings: Settings, **config: Any) -> Any:
        configs.append(config)
        return real(settings, **{**config, "log_level": 0, "message.timeout.ms": 200})

    monkeypatch.setattr(producers.app, "make_producer", spy)
    def connect(self: EventProducer, timeout: float = 2.0) -> bool:
        connects.append(timeout)
        return False

    monkeypatch.setattr(EventProducer, "connect", connect)
    report = producers.runner.produce(dead_settings, SyntheticSource(3, seed=1), flush_timeout=10)
    assert configs == [producers.runner.RUN_CLIENT_CONFIG]
    assert connects == [producers.runner.CONNECT_TIMEOUT]
    assert (report.sent, report.delivered, report.failed) == (3, 0, 3)  # nothing lost: every record accounted for


def test_flush_still_raises_when_records_are_undelivered(dead_settings: Settings, record: dict[str, Any]) -> None:
    producer = EventProducer(dead_settings, client_config={"log_level": 0, "message.timeout.ms": 60_000})
    for _ in range(3):
        producer.send(record)
    with pytest.raises(KafkaClientError, match="3 records"):
        producer.flush(timeout=0.2)


def test_rows_are_numbered_tuples_with_their_item() -> None:
    rows = list(numbered_rows(SyntheticSource(2, seed=1)))
    assert [row.number for row in rows] == [1, 2]
    assert all(isinstance(row, Row) and row.error is None and row.raw is row.item for row in rows)
    with pytest.raises(AttributeError):
        rows[0].number = 5  # type: ignore[misc]
