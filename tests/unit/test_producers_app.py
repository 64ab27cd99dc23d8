"""EventProducer behaviour that needs no broker: record checks and delivery accounting.

The client here points at a port where nothing listens, a real librdkafka
client facing a real outage (no Kafka mock): records can only time out.
"""

from __future__ import annotations

from typing import Any

import pytest

from producers import EventProducer, SyntheticSource
from streamml.config import Settings
from streamml.errors import KafkaClientError, RecordError


def quiet(**config: Any) -> dict[str, Any]:
    """Client config that keeps librdkafka's connection-refused log lines out of the output."""
    return {"log_level": 0, **config}


@pytest.fixture
def record() -> dict[str, Any]:
    return dict(next(iter(SyntheticSource(1, seed=1))))


def test_the_default_topic_is_the_namespaced_raw_events_topic(dead_settings: Settings) -> None:
    assert EventProducer(dead_settings, client_config=quiet()).topic == "unit.events.raw.v1"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("age", "abc", "field 'age': 'abc' is not of type null or int"),
        ("event_time", None, "field 'event_time': None is not of type long"),
        ("salary", "1.5", "field 'salary': '1.5' is not of type null or double"),
    ],
)
def test_a_record_that_does_not_fit_the_schema_names_the_field(
    dead_settings: Settings, record: dict[str, Any], field: str, value: Any, message: str
) -> None:
    producer = EventProducer(dead_settings, client_config=quiet())
    record[field] = value
    with pytest.raises(RecordError) as caught:
        producer.send(record)
    assert caught.value.field == field
    assert str(caught.value) == message
    assert producer.stats.sent == 0


def test_a_missing_field_is_a_record_error(dead_settings: Settings, record: dict[str, Any]) -> None:
    del record["event_id"]
    with pytest.raises(RecordError) as caught:
        EventProducer(dead_settings, client_config=quiet()).send(record)
    assert caught.value.field == "event_id"


def test_failed_deliveries_are_counted_with_their_reason(dead_settings: Settings, record: dict[str, Any]) -> None:
    producer = EventProducer(dead_settings, client_config=quiet(**{"message.timeout.ms": 300}))
    producer.send(record)
    producer.send_raw(b"\x00\x01", key="c0001")
    stats = producer.flush(timeout=10)
    assert (stats.sent, stats.delivered, stats.failed, stats.pending) == (2, 0, 2, 0)
    assert all("timed out" in reason for reason in stats.failures)
    assert stats.failures[0].startswith("unit.events.raw.v1[")


def test_flush_raises_when_records_are_still_undelivered(dead_settings: Settings, record: dict[str, Any]) -> None:
    producer = EventProducer(dead_settings, client_config=quiet(**{"message.timeout.ms": 60_000}))
    producer.send(record)
    with pytest.raises(KafkaClientError, match="1 records to unit.events.raw.v1 still undelivered after 0.2s"):
        producer.flush(timeout=0.2)
    assert producer.stats.pending == 1
