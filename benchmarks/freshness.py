"""``python -m benchmarks.freshness``: from an event produced to the first prediction by a model that learned it.

The real pipeline runs as child processes on a fresh namespace, at the
default cadence and gate: ``streamml process``, ``streamml learn`` and
``streamml score``. This process feeds demo events at a steady rate and
reads the features, models and predictions topics with one bare consumer
(``assign()``, 10 ms fetch waits), noting when each record arrives. For every
event produced in the measured window:

- **produced**: its delivery acknowledgement (``(partition, offset)`` known);
- **featurized**: its feature vector arrived (``source_partition`` /
  ``source_offset`` lead back to the event);
- **published**: the envelope of the first version that learned it *and was
  served* arrived (its ``input_offsets`` on the features partition pass the
  feature vector's offset; a version the quality gate withheld never
  predicts, so the next one counts, and such events are counted);
- **predicted**: the first prediction naming that version arrived.

Freshness is predicted - produced; its components (produce -> feature,
feature -> version published, publish -> first prediction) add up to it
event by event. Feeding starts before the window (until the first
prediction: every child is up) and goes on after it (until every event of
the window has been predicted by a version that learned it: a version only
predicts on events that arrive after it). Without ``--bootstrap-servers``
it starts the embedded broker itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from benchmarks import workloads
from benchmarks.broker_runs import stop_child
from benchmarks.harness import broker_at
from benchmarks.learner_startup import signed_round
from benchmarks.pipeline_runs import Round
from benchmarks.report import environment
from producers.synthetic import SyntheticSource
from streamml.envelope import decode_envelope
from streamml.errors import StreamMLError
from streamml.kafka import produce, record_headers
from streamml.records import FeatureVector, Prediction, RecordCodec
from streamml.serde import AvroSerde

__all__ = ["Observed", "freshness", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "freshness.json"
COMPONENTS = ("produce_to_feature_s", "feature_to_published_s", "published_to_prediction_s")
_CHILDREN = (("process", "--report-every", "0"), ("learn",), ("score",))
#: The children whose INFO lines are kept (JSON): the scorer's model swaps are read from its log.
_INFO = ("learn", "score")


@dataclass
class Observed:
    """Arrival times (epoch s) of everything the run saw, keyed so events can be followed through."""

    features_topic: str
    #: Send index -> (raw partition, raw offset, acknowledged at).
    acks: dict[int, tuple[int, int, float]] = field(default_factory=dict)
    #: (raw partition, raw offset) -> (features partition, features offset, arrived at).
    features: dict[tuple[int, int], tuple[int, int, float]] = field(default_factory=dict)
    #: (version, input_offsets, arrived at), in the models topic's order.
    versions: list[tuple[int, dict[str, int], float]] = field(default_factory=list)
    #: Version -> arrival of its first prediction.
    first_prediction: dict[int, float] = field(default_factory=dict)
    #: Version -> the earliest ``scored_at`` (the scorer's clock, ms) of its predictions, in seconds.
    first_scored: dict[int, float] = field(default_factory=dict)

    def served(self, fp: int, fo: int) -> tuple[int, float, bool] | None:
        """The first version that learned features[fp]@fo and predicted.

        Returns (version, published at, whether an earlier version that learned it never
        predicted: withheld by the gate, or superseded before a prediction).
        """
        key = f"{self.features_topic}[{fp}]"
        withheld = False
        for version, offsets, arrived in self.versions:
            if offsets.get(key, 0) > fo:
                if version in self.first_prediction:
                    return version, arrived, withheld
                withheld = True
        return None


def freshness(seen: Observed, window: range) -> list[dict[str, float]]:
    """Per event of ``window`` (send indexes) that was predicted by a version that learned it: its times."""
    rows = []
    for index in window:
        ack = seen.acks.get(index)
        feature = seen.features.get(ack[:2]) if ack else None
        served = seen.served(feature[0], feature[1]) if feature else None
        if ack is None or feature is None or served is None:
            continue
        version, published, withheld = served
        predicted = seen.first_prediction[version]
        rows.append({
            "version": version, "withheld_first": withheld, "freshness_s": predicted - ack[2],
            "produce_to_feature_s": feature[2] - ack[2], "feature_to_published_s": published - feature[2],
            "published_to_prediction_s": predicted - published,
        })
    return rows


class _Run:
    """The children, the feeder and the watcher of one run."""

    def __init__(self, r: Round, rate: float) -> None:
        self.r, self.rate = r, rate
        topics = r.cluster.topics
        self.seen = Observed(topics.features)
        self.serde = AvroSerde(workloads.demo_schema())
        self.events = iter(SyntheticSource(length=10**7, seed=5, clock=time.time))
        self.producer = r.cluster.producer()
        self.sent = 0
        self.consumer = r.cluster.consumer("reader")
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in (topics.features, topics.predictions)
                              for p in r.cluster.partitions(t)] + [TopicPartition(topics.models, 0, OFFSET_BEGINNING)])
        self.feature_codec, self.prediction_codec = RecordCodec(FeatureVector), RecordCodec(Prediction)
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for args in _CHILDREN:
            env = {**self.r.env(), "STREAMML_LOG_LEVEL": "INFO" if args[0] in _INFO else "WARNING"}
            command = [sys.executable, "-m", "streamml_cli", "--log-format", "json", *args]
            with (self.r.home / f"{args[0]}.log").open("ab") as log:
                self.children.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    def swaps(self) -> dict[int, float]:
        """Version -> when the scorer's subscriber swapped to it (its ``model_swap`` log line, epoch s)."""
        found: dict[int, float] = {}
        for line in (self.r.home / "score.log").read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "model_swap":
                found.setdefault(entry["version"], datetime.fromisoformat(entry["ts"]).timestamp())
        return found

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            stop_child(child)
        self.producer.flush(10)
        self.consumer.close()

    def _send(self) -> None:
        index, item = self.sent, next(self.events)
        assert isinstance(item, Mapping)  # no faults asked for: every item is a record
        stamp = self.seen.acks

        def acked(err: Any, msg: Message) -> None:
            if err is None:
                stamp[index] = (msg.partition() or 0, msg.offset() or 0, time.time())

        produce(self.producer, self.r.cluster.topics.raw_events, self.serde.encode(item),
                key=str(item["customer_id"]).encode(), headers=self.serde.headers, on_delivery=acked)
        self.sent += 1

    def _watch(self, timeout: float) -> None:
        topics = self.r.cluster.topics
        for message in self.consumer.consume(1000, timeout):
            if message.error() is not None:
                continue
            now, topic, value = time.time(), message.topic(), message.value()
            headers = record_headers(message)
            if topic == topics.models:
                try:
                    envelope = decode_envelope(value, headers)
                except StreamMLError:
                    continue  # a chunk or a serving directive
                self.seen.versions.append((envelope.version, dict(envelope.input_offsets), now))
            elif topic == topics.features:
                record = self.feature_codec.decode(value, headers)
                source = (record.source_partition, record.source_offset)
                self.seen.features.setdefault(source, (message.partition() or 0, message.offset() or 0, now))
            else:
                prediction = self.prediction_codec.decode(value, headers)
                self.seen.first_prediction.setdefault(prediction.model_version, now)
                scored = self.seen.first_scored.setdefault(prediction.model_version, prediction.scored_at / 1000)
                self.seen.first_scored[prediction.model_version] = min(scored, prediction.scored_at / 1000)

    def feed_until(self, done: Any, timeout: float, what: str) -> None:
        """Send at ``rate`` and watch until ``done()`` (checked every 0.25 s); raise after ``timeout`` s."""
        interval = 1.0 / self.rate
        started = next_send = next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_send:
                self._send()
                next_send = max(next_send + interval, now - 0.1)  # steady: a stall is not made up in a burst
            self.producer.poll(0)
            self._watch(max(0.0, min(next_send - time.monotonic(), 0.05)))
            if now >= next_check:
                next_check = now + 0.25
                if done():
                    return
                dead = [args[0] for args, c in zip(_CHILDREN, self.children, strict=True) if c.poll() is not None]
                if dead or now - started > timeout:
                    why = f"streamml {dead[0]} exited" if dead else f"not within {timeout:g} s"
                    raise RuntimeError(f"waiting for {what}: {why}; the children's last lines:\n{self._tails()}")

    def _tails(self, lines: int = 5) -> str:
        """The last lines of every child's log (the run's directory is removed on the way out)."""
        out = []
        for args in _CHILDREN:
            text = (self.r.home / f"{args[0]}.log").read_text(errors="replace").splitlines()[-lines:]
            out += [f"[{args[0]}] {line[:300]}" for line in text]
        return "\n".join(out)


def run(bootstrap: str | None, *, seconds: float, rate: float, partitions: int = 3) -> dict[str, Any]:
    """One run: warm up, feed ``seconds`` at ``rate`` events/s (measured), then feed until all were predicted."""
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        r = signed_round(servers, Path(scratch), partitions=partitions)
        r.home.mkdir(parents=True, exist_ok=True)
        job = _Run(r, rate)
        job.start()
        try:
            job.feed_until(lambda: bool(job.seen.first_prediction), 180, "a first prediction (pipeline up)")
            first = job.sent
            window_end = time.monotonic() + seconds
            job.feed_until(lambda: time.monotonic() >= window_end, seconds + 30, "the measured window")
            window = range(first, job.sent)

            def all_predicted() -> bool:
                return len(freshness(job.seen, window)) == len(window)

            job.feed_until(all_predicted, 120, f"every event of the window ({len(window)}) to be predicted")
        finally:
            job.stop()
        swaps = job.swaps()
    rows = freshness(job.seen, window)
    return summarize(rows, seconds=seconds, rate=rate, seen=job.seen, window=window, swaps=swaps)


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(rows: list[dict[str, Any]], *, seconds: float, rate: float, seen: Observed, window: range,
              swaps: dict[int, float]) -> dict[str, Any]:
    """p50 / p99 / max / mean of the freshness and of each component, and what the run counted."""
    def stats(key: str) -> dict[str, float]:
        values = [row[key] for row in rows]
        return {"min": min(values), "p50": _pct(values, 0.5), "p99": _pct(values, 0.99), "max": max(values),
                "mean": statistics.fmean(values)}

    served = sorted({row["version"] for row in rows})
    published = {version: arrived for version, _, arrived in seen.versions}
    per_version = [{"version": v, "events": sum(row["version"] == v for row in rows),
                    "published_to_prediction_s": seen.first_prediction[v] - published[v],
                    # The scorer's own clock, to the millisecond of its log line.
                    "published_to_swap_s": swaps[v] - published[v] if v in swaps else None,
                    "published_to_scored_s": seen.first_scored[v] - published[v]} for v in served]
    # Feature vectors come in bursts (the processor's batches): the median gap between two bursts.
    featurized = sorted(seen.features[seen.acks[i][:2]][2] for i in window if i in seen.acks
                        and seen.acks[i][:2] in seen.features)
    bursts = [b - a for a, b in zip(featurized, featurized[1:], strict=False) if b - a > 0.05]
    arrivals = [arrived for _, _, arrived in seen.versions]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {
        "events": len(window), "predicted": len(rows), "rate_per_s": rate, "seconds": seconds,
        "versions_seen": len(seen.versions), "versions_serving_the_window": served,
        "withheld_first": sum(row["withheld_first"] for row in rows),
        "median_version_interval_s": statistics.median(gaps) if gaps else None,
        "median_feature_burst_interval_s": statistics.median(bursts) if bursts else None,
        "freshness_s": stats("freshness_s"), **{key: stats(key) for key in COMPONENTS}, "per_version": per_version,
    }


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{result['events']} events at {result['rate_per_s']:g}/s over {result['seconds']:g} s, "
             f"{result['predicted']} predicted by a version that learned them (versions "
             f"{result['versions_serving_the_window']}, {result['withheld_first']} first learned by a withheld one)",
             f"versions every {_seconds(result['median_version_interval_s'])}, feature vectors in bursts every "
             f"{_seconds(result['median_feature_burst_interval_s'])} (medians)",
             f"{'':<28} {'p50':>8} {'p99':>8} {'max':>8} {'mean':>8}"]
    for key in ("freshness_s", *COMPONENTS):
        s = result[key]
        lines.append(f"{key[:-2]:<28} " + " ".join(f"{s[q]:>7.2f}s" for q in ("p50", "p99", "max", "mean")))
    for v in result["per_version"]:
        swap = _seconds(v["published_to_swap_s"])
        lines.append(f"  v{v['version']}: {v['events']} events of the window; published -> scorer's swap {swap}, "
                     f"-> first scored_at {_seconds(v['published_to_scored_s'])}, "
                     f"-> first prediction arrived {_seconds(v['published_to_prediction_s'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.freshness", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 10 s window instead of 30 s")
    parser.add_argument("--seconds", type=float, default=None, help="length of the measured window")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second (default: %(default)s)")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    result = run(args.bootstrap_servers, seconds=seconds, rate=args.rate)
    print(format_table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {"quick": args.quick, "environment": environment(), "freshness": result}
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
