"""Three ``streamml score`` processes in one group: split partitions, a crash, a hot swap.

What is checked, against the session broker, with real processes:

- every fed feature vector is scored at least once (predictions are mapped
  back to their input by ``event_id``);
- duplicates are counted and printed, and they are only what at-least-once
  allows: records of the partitions the killed scorer owned, at or after the
  offset its group had committed when it was killed, at most one per such
  record (a live rebalance replays nothing: revoked offsets are committed);
- each survivor swaps to v2 on its own, within a bounded delay (printed);
- no prediction names an older version than one already used before it on
  its partition (a new owner of a partition never goes back).

Waits are on conditions with deadlines; the group join on the embedded broker
is slow (``docs/embedded-broker.md#first-group-join``), so the test waits for
a stable assignment before it starts the clock on anything.
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
from confluent_kafka import KafkaError, Message

from model_publisher import catalog
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.lag import consumer_lag
from streamml.reader import read_to_end
from streamml.records import FeatureVector, Prediction, RecordCodec
from streamml.topics import Groups, Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration

SCORERS = 3
#: Records fed before and after the kill.
PHASE = 900
#: Records per second the feeder writes: the kill lands mid-stream.
RATE = 300.0
#: Longest a survivor may take to serve v2 after its publication, seconds.
SWAP_DEADLINE = 5.0

FEATURES = RecordCodec(FeatureVector)
PREDICTIONS = RecordCodec(Prediction)
_ASSIGNMENT = re.compile(r"^(\S+ \S+) INFO consumers\.scorer: (assigned|revoked) \S+ \[([\d, ]*)\]")
_SWAP = re.compile(r"^(\S+ \S+) INFO consumers\.swap: serving \S+ v(\d+) ")
_SCORED = re.compile(r"^scored (\d+) records \(([^)]*)\)")


@dataclass
class Scorer:
    """One ``streamml score`` child process and its log files."""

    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def assignment(self) -> set[int]:
        """Partitions it holds now, as its log says (the last assign, unless revoked since)."""
        held: set[int] = set()
        for line in self.log().splitlines():
            found = _ASSIGNMENT.match(line)
            if found:
                parts = {int(p) for p in found.group(3).replace(" ", "").split(",") if p}
                held = parts if found.group(2) == "assigned" else set()
        return held

    def swapped_at(self, version: int) -> float | None:
        """Epoch seconds of its log line that says it serves ``version`` (log time, millisecond precision)."""
        for line in self.log().splitlines():
            found = _SWAP.match(line)
            if found and int(found.group(2)) == version:
                return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None


def _start_scorer(name: str, settings: Settings, tmp_path: Path) -> Scorer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(settings.to_env())
    env.update({"STREAMML_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamml_cli", "score"], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
    return Scorer(name, process, stdout, stderr)


class Feeder:
    """Produces labelled feature vectors at a steady rate and keeps where each one landed."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self._producer = make_producer(settings)
        self._topic = topics.features
        self._raw = topics.raw_events
        self._rng = random.Random(5)
        self.landed: dict[str, tuple[int, int]] = {}
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def _delivered(self, event_id: str, err: KafkaError | None, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        if err is not None or partition is None or offset is None:
            self.failed.append(f"{event_id}: {err}")
            return
        with self._lock:
            self.landed[event_id] = (partition, offset)

    def feed(self, n: int) -> None:
        """Write ``n`` records at :data:`RATE` per second; return when all are acknowledged."""
        started = time.monotonic()
        for i in range(n):
            a, b = self._rng.gauss(0, 1), self._rng.gauss(0, 1)
            key = f"c{self._rng.randrange(60)}"
            record = FeatureVector(
                key=key, event_id=uuid.uuid4().hex, event_time=1_700_000_000_000 + i,
                features={"a": a, "b": b, "noise": self._rng.random()}, label=a + b > 0,
                source_topic=self._raw, source_partition=0, source_offset=i,
            )
            self._producer.produce(
                self._topic, key=key.encode(), value=FEATURES.encode(record), headers=FEATURES.headers,
                on_delivery=functools.partial(self._delivered, record.event_id),
            )
            self._producer.poll(0)
            # Pacing the feed is the point here (a stream, not a burst), not a wait for a condition.
            ahead = started + (i + 1) / RATE - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        assert self._producer.flush(30) == 0 and not self.failed, self.failed

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return dict(self.landed)


def _publish(settings: Settings, seed: int) -> dict[str, Any]:
    """Publish a logistic model of the concept the feeder labels by; return the envelope's version and created_at."""
    rng = random.Random(seed)
    model = catalog.build("logistic")
    for _ in range(500):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        model.learn_one({"a": a, "b": b, "noise": rng.random()}, a + b > 0)
    publisher = ModelPublisher(settings)
    publisher.start()
    try:
        envelope = publisher.publish(model, metrics={"accuracy": 1.0}, n_learned=500, input_offsets={})
    finally:
        publisher.close()
    return {"version": envelope.version, "created_at": envelope.created_at / 1000}


def _predictions(settings: Settings, topics: Topics) -> list[tuple[int, int, Prediction]]:
    """``(partition, offset, prediction)`` of every prediction, in log order per partition."""
    return [
        (m.partition() or 0, m.offset() or 0, PREDICTIONS.decode(m.value(), m.headers()))
        for m in read_to_end(Cluster(settings), topics.predictions)
    ]


def _committed(settings: Settings, topic: str) -> dict[int, int]:
    """The scorer group's committed offsets of ``topic`` (partitions without a commit are absent)."""
    group = Groups.from_settings(settings).scorer
    lag = consumer_lag(Cluster(settings), [group], topics={group: [topic]})[0]
    return {p.partition: p.committed for p in lag.partitions if p.committed is not None}


def _stop(scorer: Scorer, timeout: float = 20.0) -> int:
    if scorer.process.poll() is None:
        scorer.process.send_signal(signal.SIGTERM)
    try:
        return scorer.process.wait(timeout)
    except subprocess.TimeoutExpired:
        scorer.process.kill()
        scorer.process.wait(timeout)
        pytest.fail(f"{scorer.name} did not stop within {timeout:g}s of SIGTERM:\n{scorer.log()[-2000:]}")


def _print(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def test_three_scorers_split_the_stream_survive_a_kill_and_swap_on_their_own(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    assert len(Cluster(settings).partitions(topics.features)) >= SCORERS
    started = time.monotonic()
    scorers = [_start_scorer(f"scorer{i}", settings, tmp_path) for i in range(SCORERS)]
    try:
        # A stable group: every partition held by exactly one scorer, every scorer holding one.
        def stable() -> bool:
            held = [s.assignment() for s in scorers]
            return all(held) and sum(len(h) for h in held) == len(set().union(*held)) == SCORERS

        eventually(stable, timeout=40, interval=0.2, what="the three scorers to split the partitions")
        v1 = _publish(settings, seed=1)
        assert v1["version"] == 1
        eventually(
            lambda: all(s.swapped_at(1) for s in scorers), timeout=20, interval=0.1, what="every scorer serving v1"
        )
        feeder = Feeder(settings, topics)
        first = threading.Thread(target=feeder.feed, args=(PHASE,))
        first.start()

        # Mid-stream: the scorers are predicting and the feeder is still writing.
        eventually(
            lambda: len(_predictions(settings, topics)) >= PHASE // 6, timeout=30, what="predictions with v1"
        )
        assert first.is_alive(), "the feed ended before the kill: raise PHASE or lower RATE"
        victim = scorers[0]
        owned = victim.assignment()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        # Nobody else commits the victim's partitions until the group notices it is
        # gone (a session timeout): these are its last commits.
        committed_at_kill = _committed(settings, topics.features)
        fed_at_kill = feeder.snapshot()
        first.join(timeout=30)
        assert not first.is_alive()

        second = threading.Thread(target=feeder.feed, args=(PHASE,))
        second.start()
        v2 = _publish(settings, seed=2)
        assert v2["version"] == 2
        second.join(timeout=30)
        assert not second.is_alive()
        fed = feeder.snapshot()
        assert len(fed) == 2 * PHASE

        def all_scored() -> bool:
            return set(fed) <= {p.event_id for _, _, p in _predictions(settings, topics)}

        eventually(all_scored, timeout=45, interval=0.5, what="a prediction for every fed record")
        survivors = scorers[1:]
        codes = {s.name: _stop(s) for s in survivors}
    finally:
        for scorer in scorers:
            if scorer.process.poll() is None:
                scorer.process.kill()
                scorer.process.wait(10)
    assert codes == {s.name: 0 for s in survivors}, [s.log()[-2000:] for s in survivors]
    predictions = _predictions(settings, topics)

    # Every record at least once; duplicates only where the crash allows them.
    times = Counter(p.event_id for _, _, p in predictions)
    assert set(times) == set(fed)
    duplicates = {event_id: n for event_id, n in times.items() if n > 1}
    replayable = {
        event_id
        for event_id, (partition, offset) in fed_at_kill.items()
        if partition in owned and offset >= committed_at_kill.get(partition, 0)
    }
    out = sys.stdout
    _print(out, f"\nscaleout: {len(predictions)} predictions of {len(fed)} records, {len(duplicates)} duplicated")
    _print(out, f"scaleout: killed {victim.name} holding partitions {sorted(owned)}; committed then "
                f"{committed_at_kill}; {len(replayable)} records it could have scored uncommitted")
    for event_id, n in sorted(duplicates.items(), key=lambda item: fed[item[0]])[:20]:
        _print(out, f"scaleout: duplicate x{n}: features[{fed[event_id][0]}]@{fed[event_id][1]}")
    assert set(duplicates) <= replayable, "a duplicate outside what the killed scorer had not committed"
    assert all(n == 2 for n in duplicates.values()), "a record scored more than twice"

    # Versions only move forward on each partition (one owner at a time, each swapping forward).
    by_partition: dict[int, list[tuple[int, Prediction]]] = defaultdict(list)
    for partition, offset, prediction in predictions:
        by_partition[partition].append((offset, prediction))
    for partition, rows in by_partition.items():
        versions = [p.model_version for _, p in sorted(rows, key=lambda row: row[0])]
        assert versions == sorted(versions), f"predictions[{partition}] went back to an older version"
        assert set(versions) <= {1, 2}

    # Each survivor swapped to v2 on its own, soon, and then predicted with it only.
    for scorer in survivors:
        swapped = scorer.swapped_at(2)
        assert swapped is not None, f"{scorer.name} never served v2:\n{scorer.log()[-2000:]}"
        delay = swapped - v2["created_at"]
        _print(out, f"scaleout: {scorer.name} served v2 {delay:.3f}s after its publication")
        assert delay < SWAP_DEADLINE
        summary = [m for line in scorer.stdout.read_text().splitlines() if (m := _SCORED.match(line))]
        assert summary, scorer.stdout.read_text()
        per_version = dict(item.split(": ") for item in summary[-1].group(2).split(", "))
        assert int(per_version.get("v2", "0")) > 0, f"{scorer.name} scored nothing with v2: {summary[-1].group(0)}"
    for partition, rows in by_partition.items():
        late = [p for _, p in rows if p.scored_at / 1000 > v2["created_at"] + SWAP_DEADLINE]
        assert all(p.model_version == 2 for p in late), f"predictions[{partition}] still v1 after the deadline"
    _print(out, f"scaleout: {time.monotonic() - started:.1f}s in all")
