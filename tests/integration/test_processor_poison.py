"""Poison pills on the raw topic against ``streamml process`` on the real broker: nothing stops the pipeline.

Records of 1.01 MB (fits Kafka's default limit), 1.02 MB and 5 MB, an event
from the year 3000 and a forged union branch index go in among valid events.
The processor must keep running, quarantine each with its reason (large ones
as truncated copies with their size and digest), process every valid event
behind them, and account for every record: produced = featurized + quarantined.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from stream_processors.dead_letters import read_rejection
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.reader import read_to_end
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.conftest import eventually
from tests.integration.test_processor import _event, _incompatible_writer, _start_processor, _stop

pytestmark = pytest.mark.integration


def test_no_poison_pill_stops_the_processor(settings: Settings, topics: Topics, tmp_path: object) -> None:
    serde = AvroSerde(AvroSchema.from_file(settings.schema_path))
    now_ms = int(time.time() * 1000)
    valid_event = serde.encode(_event(0, "ok", event_time=now_ms, label=None))
    assert valid_event.endswith(b"\x00")  # the label union, null branch: forged into branch -1 below
    poison = {
        "large_1_01": b"\xff" * 1_010_000,
        "large_1_02": b"\xfe" * 1_020_000,
        "large_5": b"\xfd" * 5_000_000,
        "future": serde.encode(_event(1, "alice", event_time=32_503_680_000_000)),
        "union_minus_one": valid_event[:-1] + b"\x01\x02",
    }
    expected_rules = {
        "large_1_01": "undecodable", "large_1_02": "undecodable", "large_5": "undecodable",
        "future": "event_time_future", "union_minus_one": "non_canonical",
    }
    producer = make_producer(settings, **{"message.max.bytes": 16_000_000})
    # Everything on one partition, the valid events behind the poison: they must not wait forever.
    for name, value in poison.items():
        producer.produce(topics.raw_events, key=name.encode(), value=value, headers=serde.headers, partition=0)
    valid = 30
    for i in range(valid):
        event = _event(100 + i, "alice", event_time=now_ms - (valid - i) * 1000)
        producer.produce(topics.raw_events, key=b"alice", value=serde.encode(event), headers=serde.headers, partition=0)
    assert producer.flush(30) == 0
    writer = _incompatible_writer(tmp_path)  # type: ignore[arg-type]
    process = _start_processor(settings, writer)
    cluster = Cluster(settings)
    try:
        def accounted() -> tuple[list, list] | None:
            assert process.poll() is None, "the processor stopped"
            features = list(read_to_end(cluster, topics.features))
            dead = list(read_to_end(cluster, topics.dead_letters))
            return (features, dead) if len(features) + len(dead) >= valid + len(poison) else None

        features, dead = eventually(accounted, timeout=120, interval=0.5, what="every record accounted for")
        assert process.poll() is None  # still running after all of it
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert len(features) == valid and len(dead) == len(poison)  # conservation, nothing twice
    by_key = {m.key(): m for m in dead}
    for name, value in poison.items():
        message = by_key[name.encode()]
        reason = read_rejection(message.headers())
        assert reason["rule"] == expected_rules[name], (name, reason)
        if len(value) > settings.dead_letter_max_bytes:
            assert reason["original.size"] >= len(value)
            assert reason["original.sha256"] == hashlib.sha256(value).hexdigest()
            assert value.startswith(message.value())
        else:
            assert message.value() == value and reason["original.size"] == ""
    # The future event did not poison alice's windows: her events count up from 1.
    from streamml.records import FeatureVector, RecordCodec

    codec = RecordCodec(FeatureVector)
    vectors = sorted((codec.decode(m.value(), m.headers()) for m in features), key=lambda v: v.source_offset)
    assert [v.features["key_events_60s"] for v in vectors][:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
