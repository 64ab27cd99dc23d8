"""``python -m benchmarks.producer_throughput``: streamml's producer beside a bare confluent-kafka producer.

Two pairs, each measured with :func:`benchmarks.harness.measure` (calls of
the two sides alternate, so both see the same stretch of the machine), one
call = ``batch`` events sent and flushed:

- ``producer_send``: :meth:`producers.EventProducer.send` of record dicts
  (Avro encoding with the schema headers, the key from the record,
  idempotent acks=all delivery with a report per record);
- ``producer_run``: :func:`producers.produce`, what ``streamml produce``
  runs (the same producer plus row accounting, progress and the report),
  over an in-memory source of the same records;

each beside the same events pre-encoded, sent as raw bytes with their keys
through ``confluent_kafka.Producer`` with librdkafka's defaults (no delivery
callback). The issue's target is a ratio of at least 0.5. Without
``--bootstrap-servers`` it starts the embedded broker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from benchmarks import workloads
from benchmarks.harness import Measurement, Pair, Work, broker_at, measure
from benchmarks.report import format_table, to_json, write_json
from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.serde import AvroSchema, AvroSerde

__all__ = ["ListSource", "build_pairs", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "producer_throughput.json"


class ListSource:
    """An :class:`producers.EventSource` over records held in memory (no generation cost in the loop)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], schema: AvroSchema) -> None:
        self.records = records
        self.schema = schema
        self.name = f"list({len(records)})"

    @property
    def injected(self) -> Mapping[str, int]:
        return {}

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return iter(self.records)


def build_pairs(settings: Settings, batch: int, run_batch_size: int) -> dict[str, Pair]:
    """The two pairs, sent to the namespace's raw topic.

    ``producer_send`` calls send ``batch`` valid demo events on one long-lived
    producer; ``producer_run`` calls are whole :func:`producers.produce` runs
    of ``run_batch_size`` events (each starts its own idempotent producer, as
    every ``streamml produce`` does), each beside as many raw records.
    """
    from producers import EventProducer, produce

    schema = workloads.demo_schema()
    records = [r for r in workloads.demo_events(batch * 2, bad_fraction=0.0) if isinstance(r, Mapping)][:batch]
    serde = AvroSerde(schema)
    encoded = [(serde.encode(r), str(r[settings.key_field]).encode()) for r in records]
    topic = Cluster(settings).topics.raw_events
    raw = Producer({"bootstrap.servers": settings.bootstrap_servers, "log_level": 3})
    sender = EventProducer(settings, schema=schema)
    run_records = (records * (run_batch_size // len(records) + 1))[:run_batch_size]
    source = ListSource(run_records, schema)

    def bare(items: Sequence[tuple[bytes, bytes]]) -> Work:
        def bare_batch() -> int:
            for value, key in items:
                while True:
                    try:
                        raw.produce(topic, value=value, key=key)
                        break
                    except BufferError:  # the local queue is full: let it drain
                        raw.poll(0.01)
            raw.flush(60)
            return len(items)

        return bare_batch

    def send_batch() -> int:
        for record in records:
            sender.send(record)
        sender.flush(60)
        return len(records)

    def run_batch() -> int:
        report = produce(settings, source, flush_timeout=60)
        return report.delivered

    label = "confluent-kafka raw bytes"
    run_encoded = (encoded * (run_batch_size // len(encoded) + 1))[:run_batch_size]
    return {
        "producer_send": Pair(bare(encoded), send_batch, label, "EventProducer.send", "event"),
        "producer_run": Pair(bare(run_encoded), run_batch, label, f"produce() of {run_batch_size:,}", "event"),
    }


def run(bootstrap: str | None, *, quick: bool, rounds: int) -> dict[str, Measurement]:
    """Measure both pairs on ``bootstrap`` (or an embedded broker)."""
    batch, run_size, sample_seconds = (1000, 1000, 0.1) if quick else (5000, 20_000, 0.5)
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        settings = load_settings(env={}, bootstrap_servers=servers, namespace=f"p{uuid.uuid4().hex[:8]}.",
                                 home=Path(scratch))
        cluster = Cluster(settings)
        cluster.create_topics(cluster.topics.specs(settings))
        pairs = build_pairs(settings, batch, run_size)
        return {name: measure(pair, rounds=rounds, sample_seconds=sample_seconds) for name, pair in pairs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.producer_throughput",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000-event calls, 2 short rounds: a smoke run")
    parser.add_argument("--rounds", type=int, default=None, metavar="R", help="interleaved rounds (default 5)")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    results = run(args.bootstrap_servers, quick=args.quick, rounds=rounds)
    print(format_table(results))
    print("target (issue 11): ratio >= 0.5")
    sample = 0.1 if args.quick else 0.5
    write_json(to_json(results, quick=args.quick, rounds=rounds, sample_seconds=sample), args.json)
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
