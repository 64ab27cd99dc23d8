"""Schema evolution on the real broker: old and newer producers at once, an incompatible one quarantined."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from stream_processors.dead_letters import read_rejection
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.reader import read_to_end
from streamml.records import FeatureVector, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.conftest import eventually
from tests.integration.test_processor import STREAMML, _event, _incompatible_writer, _stop

pytestmark = pytest.mark.integration


def _newer_schema(settings: Settings, tmp_path: Path) -> Path:
    """The event schema plus an optional field with a default: a compatible evolution."""
    raw = json.loads(settings.schema_path.read_text())
    raw["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    path = tmp_path / "events_v2.avsc"
    path.write_text(json.dumps(raw))
    return path


def test_old_and_newer_producers_at_once_and_an_incompatible_one_quarantined(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    import os
    import subprocess

    newer_path = _newer_schema(settings, tmp_path)
    incompatible_path = _incompatible_writer(tmp_path)
    old, newer = AvroSerde(AvroSchema.from_file(settings.schema_path)), AvroSerde(AvroSchema.from_file(newer_path))
    incompatible = AvroSerde(AvroSchema.from_file(incompatible_path))
    assert old.reader.fingerprint != newer.reader.fingerprint
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env["STREAMML_SESSION_TIMEOUT_MS"] = str(settings.session_timeout_ms)
    process = subprocess.Popen(
        [str(STREAMML), "process", "-b", settings.bootstrap_servers, "--namespace", settings.namespace,
         "--writer-schema", str(newer_path), "--writer-schema", str(incompatible_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    now = int(time.time() * 1000)
    n = 50

    def producer_on(serde: AvroSerde, first: int, extra: dict[str, object]) -> None:
        producer = make_producer(settings)
        for i in range(first, first + n):
            event = {**_event(i, f"c{i % 5}", event_time=now - (3 * n - i) * 10), **extra}
            producer.produce(topics.raw_events, key=event["customer_id"].encode(), value=serde.encode(event),
                             headers=serde.headers)
            producer.poll(0)
        assert producer.flush(10) == 0

    try:
        writers = [
            threading.Thread(target=producer_on, args=(old, 0, {})),
            threading.Thread(target=producer_on, args=(newer, n, {"channel": "web"})),
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(30)
        producer_on(incompatible, 2 * n, {"salary": "a lot"})
        cluster = Cluster(settings)

        def outputs() -> tuple[list, list] | None:
            assert process.poll() is None, "the processor stopped"
            features = list(read_to_end(cluster, topics.features))
            dead = list(read_to_end(cluster, topics.dead_letters))
            return (features, dead) if len(features) + len(dead) >= 3 * n else None

        features, dead = eventually(outputs, timeout=90, interval=0.3, what="every event accounted for")
    finally:
        code, log = _stop(process)
    assert code == 0, log
    codec = RecordCodec(FeatureVector)
    featurized = sorted(int(codec.decode(m.value(), m.headers()).event_id[1:]) for m in features)
    assert featurized == list(range(2 * n))  # old and newer writers both processed, each event once
    assert len(dead) == n
    assert {read_rejection(m.headers())["rule"] for m in dead} == {"schema_resolution"}
