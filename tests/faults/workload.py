"""Valid raw events for the fault tier, produced at a steady rate into a :class:`Ledger`."""

from __future__ import annotations

import threading
import time
from typing import Any

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.lag import log_end_offsets
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.faults.checker import Ledger

T0 = 1_700_000_000_000  # event time of the first event, ms
CUSTOMERS = 30


def event(i: int, **overrides: Any) -> dict[str, Any]:
    """The ``i``-th valid event of the demo schema (one customer in :data:`CUSTOMERS`, 1 s apart)."""
    record: dict[str, Any] = {
        "event_id": f"e{i}", "customer_id": f"c{i % CUSTOMERS}", "event_time": T0 + i * 1000,
        "salary": 50000.0 + i % 100, "commission": 1000.0, "age": 20 + i % 50, "elevel": i % 5, "car": 1 + i % 20,
        "zipcode": i % 9, "hvalue": 200000.0, "hyears": 1 + i % 30, "loan": float(1000 + i % 500), "label": i % 2,
    }
    record.update(overrides)
    return record


def serde(settings: Settings) -> AvroSerde:
    return AvroSerde(AvroSchema.from_file(settings.schema_path))


class Feeder:
    """Produces valid events ``e<first>..`` into the raw topic at ``rate`` per second on a thread.

    Every delivery report lands in ``ledger`` (acknowledged ones only are promised).
    """

    def __init__(self, settings: Settings, topics: Topics, ledger: Ledger, *, rate: float) -> None:
        self.settings, self.topics, self.ledger, self.rate = settings, topics, ledger, rate
        self._producer = make_producer(settings)
        self._serde = serde(settings)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def produce(self, first: int, n: int) -> None:
        """Write ``n`` events at the rate (pacing the stream is the point, not a wait for a condition)."""
        started = time.monotonic()
        for k in range(n):
            if self._stop.is_set():
                break
            record = event(first + k)
            self._producer.produce(
                self.topics.raw_events, key=record["customer_id"].encode(), value=self._serde.encode(record),
                headers=self._serde.headers, on_delivery=self.ledger.on_delivery(record["event_id"]),
            )
            self.sent += 1
            self._producer.poll(0)
            ahead = started + (k + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        remaining = self._producer.flush(30)
        assert remaining == 0, f"{remaining} events unacknowledged after 30 s"

    def start(self, first: int, n: int) -> Feeder:
        def run() -> None:
            try:
                self.produce(first, n)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self._thread = threading.Thread(target=run, name="feeder", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 120.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(30)
            raise AssertionError(f"the feeder did not finish within {timeout:g}s")
        if self.error is not None:
            raise self.error
        assert not self.ledger.failed, self.ledger.failed[:5]


def records_in(settings: Settings, topic: str) -> int:
    """Records in ``topic`` now (sum of the true log-end offsets; topics here are never trimmed)."""
    cluster = Cluster(settings)
    return sum(log_end_offsets(cluster, [(topic, p) for p in cluster.partitions(topic)]).values())


class FeatureFeeder:
    """Produces learnable feature vectors (label: a + b > 0) straight into the features topic, on a thread.

    At most ``limit`` records at ``rate`` per second, until :meth:`stop`.
    """

    def __init__(self, settings: Settings, topics: Topics, *, rate: float, limit: int, seed: int = 3) -> None:
        self.settings, self.topics, self.rate, self.limit, self.seed = settings, topics, rate, limit, seed
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-feeder", daemon=True)

    def _run(self) -> None:
        import random
        import uuid

        from streamml.records import FeatureVector, RecordCodec

        codec = RecordCodec(FeatureVector)
        try:
            rng = random.Random(self.seed)
            producer = make_producer(self.settings)
            started = time.monotonic()
            for i in range(self.limit):
                if self._stop.is_set():
                    break
                a, b = rng.gauss(0, 1), rng.gauss(0, 1)
                record = FeatureVector(
                    key=f"c{i % 50}", event_id=uuid.uuid4().hex, event_time=T0 + i,
                    features={"a": a, "b": b, "noise": rng.random()}, label=a + b > 0,
                    source_topic=self.topics.raw_events, source_partition=0, source_offset=i,
                )
                producer.produce(self.topics.features, key=f"c{i % 50}".encode(), value=codec.encode(record),
                                 headers=codec.headers)
                self.sent += 1
                producer.poll(0)
                ahead = started + (i + 1) / self.rate - time.monotonic()  # pacing a stream, not a wait
                if ahead > 0:
                    self._stop.wait(ahead)
            assert producer.flush(30) == 0
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def start(self) -> FeatureFeeder:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the feature feeder did not stop"
        if self.error is not None:
            raise self.error
