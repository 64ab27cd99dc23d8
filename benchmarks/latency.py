"""``python -m benchmarks.latency``: publish-to-serving latency beside bare Kafka delivery, same run.

For a small model (a scaled logistic regression, ~2 KB) and a large one
(~5 MB, sent in chunks under Kafka's default 1 MB record limit), it measures:

- **candidate**: from the start of ``ModelPublisher.publish()`` (sign, seal,
  produce, acknowledged) to the ``on_swap`` callback of a
  ``ModelSubscriber`` (read, verify, unpickle through the allowlist, replay
  the golden examples, swap);
- **baseline**: from ``produce()`` of a record of the same size with
  confluent-kafka to its arrival at a bare consumer (``assign()``,
  ``poll()``), the delivery latency a user would measure.

Samples of the two alternate one by one, so a slow stretch of the machine
hits both. It reports p50 and p99 of each and their ratios. Without
``--bootstrap-servers`` it starts the embedded broker itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.harness import broker_at

__all__ = ["LatencyResult", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latency.json"


@dataclass(frozen=True)
class LatencyResult:
    name: str
    record_bytes: int
    baseline_ms: tuple[float, ...]
    candidate_ms: tuple[float, ...]

    @staticmethod
    def _pct(samples: Sequence[float], q: float) -> float:
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        b50, b99 = self._pct(self.baseline_ms, 0.5), self._pct(self.baseline_ms, 0.99)
        c50, c99 = self._pct(self.candidate_ms, 0.5), self._pct(self.candidate_ms, 0.99)
        return {
            "record_bytes": self.record_bytes,
            "samples": len(self.candidate_ms),
            "baseline_p50_ms": b50,
            "baseline_p99_ms": b99,
            "candidate_p50_ms": c50,
            "candidate_p99_ms": c99,
            "ratio_p50": c50 / b50 if b50 else float("inf"),
            "ratio_p99": c99 / b99 if b99 else float("inf"),
            "candidate_mean_ms": statistics.fmean(self.candidate_ms),
        }


def _small_model() -> Any:
    from model_publisher import catalog

    model = catalog.build("logistic")
    for i in range(200):
        model.learn_one({"a": float(i % 5), "b": float(i % 3)}, i % 2 == 0)
    return model


def large_model(features: int = 100_000) -> Any:
    """A river pipeline of about 53 bytes a feature: 100k features pickle to ~5.3 MB."""
    from river import compose, linear_model, preprocessing

    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    row = {f"f{i}": float(i % 7) for i in range(features)}
    model.learn_one(row, True)
    model.learn_one({k: v + 1.0 for k, v in row.items()}, False)
    return model


class _BareDelivery:
    """A producer and an assigned consumer on one topic: the delivery latency of one record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        common = {"bootstrap.servers": bootstrap, "log_level": 3}
        self.topic = topic
        self.producer = Producer({**common, "linger.ms": 0, "message.max.bytes": 16_000_000, "acks": "all"})
        self.consumer = Consumer(
            {**common, "group.id": f"bench-{uuid.uuid4().hex}", "enable.auto.commit": False, "fetch.wait.max.ms": 10}
        )
        self.next_offset = 0

    def sample(self, value: bytes) -> float:
        self.consumer.assign([TopicPartition(self.topic, 0, self.next_offset)])
        started = time.perf_counter()
        self.producer.produce(self.topic, value=value)
        self.producer.poll(0)
        while True:
            message = self.consumer.poll(5.0)
            if message is None:
                raise RuntimeError("a bare record did not arrive within 5 s")
            if message.error() is None:
                self.next_offset = (message.offset() or 0) + 1
                return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


def _measure(bootstrap: str, name: str, model: Any, samples: int, home: Path) -> LatencyResult:
    from consumers import ModelSubscriber
    from model_publisher.publisher import ModelPublisher
    from streamml.cluster import Cluster
    from streamml.config import load_settings
    from streamml.signing import generate_key_pair

    keys = home / "keys"
    if not (keys / "model-signing.key").exists():
        generate_key_pair(keys)
    settings = load_settings(env={}, bootstrap_servers=bootstrap, namespace=f"bench{uuid.uuid4().hex[:8]}.", home=home)
    cluster = Cluster(settings)
    cluster.create_topics(cluster.topics.specs(settings))
    bare_topic = settings.topic("bench.bare")
    from streamml.topics import TopicSpec

    cluster.create_topics([TopicSpec(bare_topic, 1)])
    golden = [{"a": 1.0, "b": 2.0}, {"f1": 1.0, "f2": 5.0}]
    publisher = ModelPublisher(cluster)
    publisher.start()
    swapped = threading.Event()
    subscriber = ModelSubscriber(cluster, on_swap=lambda old, new, env: swapped.set())
    subscriber.start()
    bare = _BareDelivery(bootstrap, bare_topic)
    baseline: list[float] = []
    candidate: list[float] = []
    try:
        first = publisher.publish(model, metrics={}, n_learned=1, input_offsets={}, golden_inputs=golden)
        if not subscriber.wait_for_version(first.version, timeout=60):
            raise RuntimeError(f"the subscriber did not load v{first.version}: {subscriber.refused}")
        size = first.payload_size
        filler = bytes(min(size, 15_000_000))
        bare.sample(filler)  # warm-up: connections and metadata of both paths are set up
        for index in range(samples * 2):
            if index % 2 == 0:
                baseline.append(bare.sample(filler))
                continue
            swapped.clear()
            started = time.perf_counter()
            publisher.publish(model, metrics={}, n_learned=index, input_offsets={}, golden_inputs=golden)
            if not swapped.wait(60):
                raise RuntimeError(f"no swap within 60 s: {subscriber.refused}")
            candidate.append((time.perf_counter() - started) * 1000)
    finally:
        bare.close()
        subscriber.stop()
        publisher.close()
    return LatencyResult(name, size, tuple(baseline), tuple(candidate))


def run(bootstrap: str | None, *, quick: bool = False) -> dict[str, LatencyResult]:
    """Measure both model sizes; start the embedded broker when ``bootstrap`` is ``None``."""
    small_samples, large_samples = (5, 2) if quick else (100, 20)
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        home = Path(scratch)
        return {
            "small_model": _measure(servers, "small_model", _small_model(), small_samples, home),
            "large_model": _measure(
                servers, "large_model", large_model(20_000 if quick else 100_000), large_samples, home
            ),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few samples and a smaller large model")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    results = {name: r.summary() for name, r in run(args.bootstrap_servers, quick=args.quick).items()}
    columns = ("bare p50", "bare p99", "swap p50", "swap p99")
    header = f"{'case':<12} {'bytes':>10} " + " ".join(f"{c:>9}" for c in columns) + f" {'x p50':>6} {'x p99':>6}"
    print(header)
    for name, s in results.items():
        keys = ("baseline_p50_ms", "baseline_p99_ms", "candidate_p50_ms", "candidate_p99_ms")
        times = " ".join(f"{s[key]:>7.1f}ms" for key in keys)
        print(f"{name:<12} {s['record_bytes']:>10} {times} {s['ratio_p50']:>6.1f} {s['ratio_p99']:>6.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"quick": args.quick, "latency": results}, indent=2))
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
