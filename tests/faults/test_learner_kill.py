"""Fault 3: ``streamml learn`` SIGKILLed mid-stream and restarted.

Feature vectors arrive at a steady rate; the learner is SIGKILLed once it
has published :data:`BEFORE_KILL` versions and restarted at once. Guarantees:
version numbers on the models topic strictly increase across the restart
(no number reused, none going back), and the restarted learner resumes from
what it stored: its first version's ``n_learned`` and every ``input_offsets``
entry continue from the last version before the kill, and it goes on to
learn every record.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.records import FeatureVector, RecordCodec
from streamml.registry import VersionRecord, read_versions
from streamml.topics import Topics
from tests.conftest import eventually
from tests.faults.checker import now_ms
from tests.faults.conftest import Component

FEATURES = RecordCodec(FeatureVector)
EVENTS = 3000
RATE = 400.0
BEFORE_KILL = 2


def _feed(settings: Settings, topics: Topics, n: int, failures: list[BaseException]) -> None:
    try:
        rng = random.Random(3)
        producer = make_producer(settings)
        started = time.monotonic()
        for i in range(n):
            a, b = rng.gauss(0, 1), rng.gauss(0, 1)
            record = FeatureVector(
                key=f"c{i % 50}", event_id=uuid.uuid4().hex, event_time=1_700_000_000_000 + i,
                features={"a": a, "b": b, "noise": rng.random()}, label=a + b > 0,
                source_topic=topics.raw_events, source_partition=0, source_offset=i,
            )
            producer.produce(topics.features, key=record.key.encode(), value=FEATURES.encode(record),
                             headers=FEATURES.headers)
            producer.poll(0)
            ahead = started + (i + 1) / RATE - time.monotonic()  # pacing a stream, not waiting for a condition
            if ahead > 0:
                time.sleep(ahead)
        assert producer.flush(30) == 0
    except BaseException as exc:  # re-raised by the test
        failures.append(exc)


def _versions(settings: Settings) -> list[VersionRecord]:
    return [v for v in read_versions(Cluster(settings), model_name=settings.model_name)
            if v.version is not None and v.envelope is not None]


def test_learner_sigkilled_resumes_and_versions_never_go_back(
    settings: Settings, topics: Topics, spawn: Callable[..., Component]
) -> None:
    failures: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(settings, topics, EVENTS, failures), daemon=True)
    learner = spawn("learn", "--publish-every-events", "300", "--publish-every-seconds", "2")

    def ready() -> bool:
        learner.assert_alive()
        return "publisher for" in learner.output()

    # Feed a live stream (not history it would learn in one go): start once the learner is up.
    eventually(ready, timeout=30, interval=0.1, what="the learner to start")
    feeder.start()

    def published(n: int) -> list[VersionRecord] | None:
        learner.assert_alive()
        versions = _versions(settings)
        return versions if len(versions) >= n else None

    eventually(lambda: published(BEFORE_KILL), timeout=60, interval=0.2, what=f"{BEFORE_KILL} versions")
    learner.kill()
    killed_at = learner.kills[-1]
    before = _versions(settings)
    learner.start()
    feeder.join(60)
    assert not feeder.is_alive() and not failures, failures

    def learned_everything() -> bool:
        versions = published(1) or []
        return bool(versions) and versions[-1].envelope.n_learned >= EVENTS  # type: ignore[union-attr]

    eventually(learned_everything, timeout=60, interval=0.5, what=f"a version that learned all {EVENTS} records")
    code = learner.stop()
    versions = _versions(settings)
    numbers = [v.version for v in versions]
    last_before = before[-1].envelope
    after = [v for v in versions if v.offset > before[-1].offset]
    first_after = after[0].envelope
    assert last_before is not None and first_after is not None
    first_after_delay = (first_after.created_at - killed_at) / 1000
    print(
        f"faults: learner-kill: features {EVENTS}, versions {numbers[0]}..{numbers[-1]} ({len(numbers)}), "
        f"killed after v{before[-1].version} (n_learned {last_before.n_learned}), "
        f"restarted v{after[0].version} n_learned {first_after.n_learned}, "
        f"first version {first_after_delay:.1f} s after the kill, "
        f"final n_learned {versions[-1].envelope.n_learned}, regressions 0"  # type: ignore[union-attr]
    )

    assert numbers == sorted(set(numbers)), f"version numbers not strictly increasing: {numbers}"
    assert after[0].version > before[-1].version
    assert first_after.n_learned >= last_before.n_learned, (first_after.n_learned, last_before.n_learned)
    for key, offset in last_before.input_offsets.items():
        assert first_after.input_offsets.get(key, -1) >= offset, (key, first_after.input_offsets, offset)
    for older, newer in zip(versions, versions[1:], strict=False):
        assert newer.envelope.n_learned >= older.envelope.n_learned, (older.version, newer.version)  # type: ignore[union-attr]
    # Resumed, not retrained: at most the records since the last version are learned again.
    assert versions[-1].envelope.n_learned <= EVENTS + (EVENTS - last_before.n_learned)  # type: ignore[union-attr]
    assert code == 0, learner.tail()
    assert now_ms() > killed_at
