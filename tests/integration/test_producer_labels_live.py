"""Delayed labels against a real broker: events without labels, labels later, co-partitioned by event id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from producers import RawPayload, SyntheticSource, produce
from producers.labels import LabelScheduler
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError
from streamml.reader import read_to_end
from streamml.records import DEMO_EVENTS_SCHEMA, LabelRecord, RecordCodec
from streamml.serde import AvroSerde, DecodeError, bundled_schema
from streamml.topics import Topics, TopicSpec

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")
FIXED_CLOCK = lambda: 1_700_000_000.0  # noqa: E731 - makes synthetic events fully deterministic


def expected_labels(source: SyntheticSource) -> dict[str, int]:
    """``event id -> label`` of the source's events, generated in memory."""
    return {item["event_id"]: item["label"] for item in source if not isinstance(item, RawPayload)}


def read_labels(settings: Settings, topics: Topics) -> dict[str, list[tuple[LabelRecord, int, bytes]]]:
    """``event id -> [(label record, partition, key)]`` of everything on the labels topic."""
    codec = RecordCodec(LabelRecord)
    out: dict[str, list[tuple[LabelRecord, int, bytes]]] = defaultdict(list)
    for message in read_to_end(Cluster(settings), topics.labels):
        record = codec.decode(message.value(), message.headers())
        out[record.event_id].append((record, message.partition(), message.key()))
    return out


def test_labels_arrive_later_once_each_plus_duplicates_on_the_murmur2_partition(
    settings: Settings, topics: Topics
) -> None:
    source = SyntheticSource(300, seed=11, bad_fraction=0.05, clock=FIXED_CLOCK)
    started_ms = int(time.time() * 1000)
    report = produce(settings, source, label_delay=1.0, label_duplicates=0.1, label_seed=5)
    finished_ms = int(time.time() * 1000)
    expected = expected_labels(SyntheticSource(300, seed=11, bad_fraction=0.05, clock=FIXED_CLOCK))
    corrupt = source.injected["corrupt_bytes"]
    assert corrupt > 0 and len(expected) == 300 - corrupt

    # The same seed schedules the same duplicates in memory.
    twin = LabelScheduler(1.0, duplicates=0.1, seed=5)
    for event_id, label in expected.items():
        twin.add(event_id, label, 0.0)
    assert report.ok, report.failures
    assert (report.sent, report.delivered, report.labels_topic) == (300, 300, topics.labels)
    assert report.label_duplicates == twin.scheduled_duplicates > 0
    assert report.labels_sent == report.labels_delivered == len(expected) + report.label_duplicates
    assert f"{report.labels_sent} labels sent to {topics.labels}" in report.summary()

    # Every event went out without its label; corrupt payloads went out as they were.
    serde = AvroSerde(bundled_schema(DEMO_EVENTS_SCHEMA))
    events, undecodable = {}, 0
    for message in read_to_end(Cluster(settings), topics.raw_events):
        try:
            event = serde.decode(message.value(), message.headers())
        except DecodeError:
            undecodable += 1
            continue
        assert event["label"] is None
        events[event["event_id"]] = event
    assert undecodable == corrupt and set(events) == set(expected)

    # One label per labelled event (two for the duplicates), with the right value.
    labels = read_labels(settings, topics)
    assert set(labels) == set(expected)
    assert sum(len(copies) - 1 for copies in labels.values()) == report.label_duplicates
    assert {len(copies) for copies in labels.values()} == {1, 2}
    partitions = list(range(settings.partitions))
    faust_side = DefaultPartitioner()  # what aiokafka (hence faust) picks for a key
    crc32_differs = 0
    label_times = []
    for event_id, copies in labels.items():
        key = event_id.encode("utf-8")
        murmur2_partition = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
        assert murmur2_partition == faust_side(key, partitions, partitions)
        crc32_differs += zlib.crc32(key) % len(partitions) != murmur2_partition
        for record, partition, record_key in copies:
            assert record.label == expected[event_id]
            assert record_key == key
            assert partition == murmur2_partition, f"label of {event_id} on partition {partition}"
            assert started_ms <= record.label_time <= finished_ms
            label_times.append(record.label_time)
    # The check above tells the partitioners apart: librdkafka's default
    # (CRC32) would have put many labels elsewhere.
    assert crc32_differs > len(labels) // 3
    assert {p for copies in labels.values() for _, p, _ in copies} == set(partitions)
    # Labels were spread over the delay, not sent together with their events.
    assert max(label_times) - min(label_times) >= 500
    assert report.elapsed >= 0.5


def test_the_same_seed_sends_the_same_labels_twice(settings: Settings, topics: Topics) -> None:
    source = SyntheticSource(100, seed=2, clock=FIXED_CLOCK)
    first = produce(settings, source, label_delay=0.0, label_duplicates=0.3, label_seed=1)
    second = produce(settings, source, label_delay=0.0, label_duplicates=0.3, label_seed=1)
    assert first.ok and second.ok
    assert first.label_duplicates == second.label_duplicates > 0
    labels = read_labels(settings, topics)
    # Every event id was sent twice over, so each count is even: 2 or 4.
    assert {len(copies) for copies in labels.values()} == {2, 4}
    assert sum(len(copies) for copies in labels.values()) == first.labels_sent + second.labels_sent


def test_labels_come_due_while_a_paced_stream_is_still_being_sent(settings: Settings, topics: Topics) -> None:
    report = produce(settings, SyntheticSource(60, seed=6), rate=100.0, label_delay=0.2)
    assert report.ok and report.labels_sent == 60
    # Producer timestamps (CreateTime) say when each event was handed to the client.
    last_event_ms = max(m.timestamp()[1] for m in read_to_end(Cluster(settings), topics.raw_events))
    label_times = [copies[0][0].label_time for copies in read_labels(settings, topics).values()]
    # Events take ~0.6 s and labels at most 0.2 s more: most labels went out
    # between events, not after the stream.
    assert sum(t < last_event_ms for t in label_times) > len(label_times) // 2


def test_a_missing_labels_topic_fails_before_any_event_is_sent(settings: Settings) -> None:
    names = Topics.from_settings(settings)
    Cluster(settings).create_topics([TopicSpec(names.raw_events, settings.partitions)])
    with pytest.raises(KafkaClientError) as caught:
        produce(settings, SyntheticSource(10, seed=1), label_delay=1.0)
    assert str(caught.value) == (
        f"topic {names.labels} does not exist; create it with 'streamml topics create'"
    )
    assert list(read_to_end(Cluster(settings), names.raw_events)) == []

    result = run_cli(settings, "--limit", "10", "--label-delay", "1")
    assert result.returncode == 3
    assert result.stderr == f"streamml: error: {caught.value}\n"


def test_the_cli_sends_labels_right_after_their_events_and_prints_one_line(
    settings: Settings, topics: Topics
) -> None:
    result = run_cli(
        settings, "--limit", "200", "--seed", "3", "--label-delay", "0", "--label-duplicates", "0.1",
        "--label-seed", "4",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    labels = read_labels(settings, topics)
    duplicates = sum(len(copies) - 1 for copies in labels.values())
    assert len(labels) == 200 and duplicates > 0
    assert line.startswith(f"200 events sent to {topics.raw_events}, 200 delivered")
    assert line.endswith(
        f"; {200 + duplicates} labels sent to {topics.labels} ({duplicates} duplicates), {200 + duplicates} delivered"
    )


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    # The test's own settings go in as flags; no STREAMML_* variable of the
    # caller's shell may leak in and change them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return subprocess.run(
        [str(STREAMML), "produce", "-b", settings.bootstrap_servers, "--namespace", settings.namespace, *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120,
    )
