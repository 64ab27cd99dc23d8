"""Baseline programs that forward bytes, run as child processes by :mod:`benchmarks.processor_throughput`.

``python -m benchmarks.forwarders faust|confluent --bootstrap HOST:PORT --source T --dest T --group G``

- ``faust``: a bare faust agent reading the source in ``take_events``
  batches (500, like the processor) and sending each record's key, value and
  headers to the same partition of ``dest``: the floor of any faust processor.
- ``confluent``: a confluent-kafka ``consume(500)`` -> ``produce`` loop with
  the same group settings: the floor of a Kafka client in Python.

Both join a group with a 6 s session timeout (the embedded broker makes a
first join wait about half of it, as it does for ``streamml process``) and
stop cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

BATCH = 500
SESSION_S = 6.0


def run_faust(bootstrap: str, source: str, dest: str, group: str, datadir: Path) -> None:
    """Forward ``source`` to ``dest`` with a bare faust agent until SIGTERM."""
    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        broker_session_timeout=SESSION_S,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=SESSION_S,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        producer_acks=-1,
        stream_buffer_maxsize=4096,
    )
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw", "internal": False}
    source_topic = app.topic(source, **raw)
    dest_topic = app.topic(dest, **raw)

    @app.agent(source_topic)
    async def forward(stream: Any) -> None:
        async for events in stream.take_events(BATCH, within=0.2):
            for event in events:
                message = event.message
                # send() queues the record and returns a future: no wait per record.
                await dest_topic.send(
                    key=message.key, value=message.value, partition=message.partition, headers=message.headers
                )

    worker = faust.Worker(app, quiet=True, loglevel="WARNING", redirect_stdouts=False)
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass


def run_confluent(bootstrap: str, source: str, dest: str, group: str) -> None:
    """Forward ``source`` to ``dest`` with a confluent-kafka loop until SIGTERM."""
    from confluent_kafka import Consumer, Producer

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    common = {"bootstrap.servers": bootstrap, "log_level": 3}
    consumer = Consumer({
        **common,
        "group.id": group,
        "session.timeout.ms": int(SESSION_S * 1000),
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
    })
    producer = Producer({**common, "linger.ms": 5, "acks": "all"})
    consumer.subscribe([source])
    while not stopping:
        for message in consumer.consume(BATCH, 0.1):
            if message.error() is not None:
                continue
            try:
                producer.produce(
                    dest, value=message.value(), key=message.key(), partition=message.partition() or 0,
                    headers=message.headers(),
                )
            except BufferError:
                producer.poll(0.05)
                producer.produce(dest, value=message.value(), key=message.key(), partition=message.partition() or 0)
        producer.poll(0)
    producer.flush(10)
    consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forwarders", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("faust", "confluent"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--datadir", type=Path, default=Path("/tmp/streamml-bench-faust"))
    args = parser.parse_args(argv)
    if args.kind == "faust":
        run_faust(args.bootstrap, args.source, args.dest, args.group, args.datadir)
    else:
        run_confluent(args.bootstrap, args.source, args.dest, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
