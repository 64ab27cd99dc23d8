"""The learner learns each event once when the features topic holds it twice (a processor replay)."""

from __future__ import annotations

import random

import pytest

from model_publisher.learning_loop import LearningLoop
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Topics
from tests.integration.test_models_learner import run_while_producing

pytestmark = pytest.mark.integration

FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))


def _produce_with_replays(settings: Settings, topics: Topics, n: int, replayed: range) -> None:
    """``n`` labelled vectors, then those of ``replayed`` again (as after a processor crash)."""
    rng = random.Random(7)
    rows = []
    for i in range(n):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        rows.append({
            "key": f"c{i % 10}", "event_id": f"e{i}", "event_time": 1_700_000_000_000 + i,
            "features": {"a": a, "b": b}, "label": a + b > 0,
            "source_topic": topics.raw_events, "source_partition": 0, "source_offset": i,
        })
    producer = make_producer(settings)
    for row in [*rows, *(rows[i] for i in replayed)]:
        producer.produce(topics.features, key=row["key"].encode(), value=FEATURES.encode(row),
                         headers=FEATURES.headers, partition=0)
    assert producer.flush(30) == 0


def test_a_replayed_feature_vector_is_consumed_but_not_learned_again(settings: Settings, topics: Topics) -> None:
    loop = LearningLoop(settings, max_events=260)
    report = run_while_producing(loop, lambda: _produce_with_replays(settings, topics, 200, range(140, 200)))
    assert (report.consumed, report.learned, report.duplicates) == (260, 200, 60)
    # Its offsets moved past the duplicates: a resumed learner starts after them.
    assert loop._learner is not None and loop._learner.input_offsets
    assert max(loop._learner.input_offsets.values()) == 260


def test_deduplication_off_learns_every_record(settings: Settings, topics: Topics) -> None:
    loop = LearningLoop(settings.with_overrides(learner_dedup_events=0), max_events=260)
    report = run_while_producing(loop, lambda: _produce_with_replays(settings, topics, 200, range(140, 200)))
    assert (report.learned, report.duplicates) == (260, 0)
