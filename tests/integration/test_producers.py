"""Producing to a real broker: synthetic and file events read back and decoded."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from producers import EventProducer, RawPayload, SourceItem, SyntheticSource, open_source, produce
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import RecordError
from streamml.reader import read_to_end
from streamml.records import DEMO_EVENTS_SCHEMA
from streamml.serde import SCHEMA_HEADER, AvroSerde, DecodeError, bundled_schema, header_value
from streamml.topics import Topics

pytestmark = pytest.mark.integration

FIXED_CLOCK = lambda: 1_700_000_000.0  # noqa: E731 - makes synthetic events fully deterministic
SCHEMA = bundled_schema(DEMO_EVENTS_SCHEMA)


def test_synthetic_events_arrive_keyed_by_customer_with_the_schema_header(settings: Settings, topics: Topics) -> None:
    source = SyntheticSource(600, seed=3, clock=FIXED_CLOCK)
    report = produce(settings, source)
    assert (report.sent, report.delivered, report.failed, report.injected_bad) == (600, 600, 0, 0)
    assert report.ok and report.topic == topics.raw_events

    serde = AvroSerde(SCHEMA)
    messages = list(read_to_end(Cluster(settings), topics.raw_events))
    assert len(messages) == 600
    partitions_by_key: dict[str, set[int]] = defaultdict(set)
    received = {}
    for message in messages:
        assert header_value(message.headers(), SCHEMA_HEADER) == SCHEMA.fingerprint.encode()
        event = serde.decode(message.value(), message.headers())
        assert message.key() == event["customer_id"].encode()
        partitions_by_key[event["customer_id"]].add(message.partition())
        received[event["event_id"]] = event
    expected = {e["event_id"]: e for e in SyntheticSource(600, seed=3, clock=FIXED_CLOCK)}
    assert received == expected
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert any(len([m for m in messages if m.key() == k.encode()]) > 1 for k in partitions_by_key)
    assert len({m.partition() for m in messages}) == settings.partitions


def test_injected_faults_are_sent_as_they_are(settings: Settings, topics: Topics) -> None:
    source = SyntheticSource(500, seed=5, bad_fraction=0.2)
    report = produce(settings, source)
    assert report.delivered == 500 and report.injected_bad == sum(source.injected.values()) > 50
    serde = AvroSerde(SCHEMA)
    undecodable = 0
    for message in read_to_end(Cluster(settings), topics.raw_events):
        try:
            serde.decode(message.value(), message.headers())
        except DecodeError:
            undecodable += 1
    assert undecodable == source.injected["corrupt_bytes"] > 0


def test_a_csv_file_is_produced_with_coerced_types(settings: Settings, topics: Topics, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    fields = ["event_id", "customer_id", "event_time", "age", "salary", "label", "comment"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for i in range(40):
            label = i % 2 if i % 10 else ""
            writer.writerow([f"e{i}", f"c{i % 4}", 1_700_000_000_000 + i, 30 + i % 5, f"{40000 + i}.5", label, "x"])
    report = produce(settings, open_source(str(path), settings), topic=topics.features)
    assert (report.sent, report.delivered) == (40, 40)

    serde = AvroSerde(SCHEMA)
    events = {}
    for m in read_to_end(Cluster(settings), topics.features):
        event = serde.decode(m.value(), m.headers())
        events[event["event_id"]] = event
    assert len(events) == 40
    assert events["e7"] == {
        "event_id": "e7", "customer_id": "c3", "event_time": 1_700_000_000_007, "salary": 40007.5, "commission": None,
        "age": 32, "elevel": None, "car": None, "zipcode": None, "hvalue": None, "hyears": None, "loan": None,
        "label": 1,
    }
    assert events["e10"]["label"] is None


class ListSource:
    """A minimal source over given items, to put a bad record at a known position."""

    name = "list"
    schema = SCHEMA

    def __init__(self, items: list[SourceItem]) -> None:
        self.items = items

    @property
    def injected(self) -> Mapping[str, int]:
        return {}

    def __iter__(self) -> Iterator[SourceItem]:
        return iter(self.items)


def test_a_bad_record_stops_the_run_with_its_row_after_delivering_the_rows_before(
    settings: Settings, topics: Topics
) -> None:
    good = list(SyntheticSource(3, seed=1))
    bad: dict[str, Any] = {**good[2], "car": "red"}
    with pytest.raises(RecordError) as caught:
        produce(settings, ListSource([good[0], good[1], bad, good[2]]))
    assert str(caught.value) == (
        "row 3, field 'car': 'red' is not of type null or int; rows 1-2 were sent and acknowledged"
    )
    assert (caught.value.row, caught.value.field) == (3, "car")
    assert len(list(read_to_end(Cluster(settings), topics.raw_events))) == 2


def test_limit_rate_and_explicit_keys(settings: Settings, topics: Topics) -> None:
    report = produce(settings, SyntheticSource(1000, seed=2), limit=60, rate=200.0)
    assert report.sent == 60
    # 60 events at 200/s are due over 59/200 = 0.295 s: the pacer must hold them back.
    assert report.elapsed >= 0.28
    assert report.rate <= 210

    with EventProducer(settings, topic=topics.predictions) as producer:
        producer.send(good := next(iter(SyntheticSource(1, seed=9))), key="explicit")
        producer.send_raw(b"\x01\x02\x03", key="raw", headers=())
    assert producer.stats.delivered == 2
    messages = {m.key(): m for m in read_to_end(Cluster(settings), topics.predictions)}
    assert set(messages) == {b"explicit", b"raw"}
    assert AvroSerde(SCHEMA).decode(messages[b"explicit"].value(), messages[b"explicit"].headers()) == good
    assert messages[b"raw"].value() == b"\x01\x02\x03" and not messages[b"raw"].headers()


def test_a_full_client_queue_is_waited_out_not_lost(settings: Settings, topics: Topics) -> None:
    # A 20-record queue overflows at once: send() must serve deliveries and retry.
    events = list(SyntheticSource(500, seed=4))
    with EventProducer(settings, client_config={"queue.buffering.max.messages": 20}) as producer:
        for event in events:
            producer.send(event)
    assert (producer.stats.sent, producer.stats.delivered) == (500, 500)
    assert len(list(read_to_end(Cluster(settings), topics.raw_events))) == 500


def test_raw_payloads_carry_the_schema_headers_by_default(settings: Settings, topics: Topics) -> None:
    produce(settings, ListSource([RawPayload(b"\xff" * 8, key="c1")]))
    [message] = list(read_to_end(Cluster(settings), topics.raw_events))
    assert header_value(message.headers(), SCHEMA_HEADER) == SCHEMA.fingerprint.encode()
    with pytest.raises(DecodeError) as caught:
        AvroSerde(SCHEMA).decode(message.value(), message.headers())
    assert caught.value.rule in ("undecodable", "trailing_bytes")
