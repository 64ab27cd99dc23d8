"""``streamml tail TOPIC``: print a pipeline topic's records decoded, the way kcat shows records."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml.inspection import TopicDecoder, format_line
from streamml.lag import watermarks
from streamml.reader import read_to_end
from streamml_cli.options import connection_options, settings_from

__all__ = ["COMMANDS"]


@click.command("tail")
@connection_options
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at each partition's first record.")
@click.option("--partition", "-p", type=click.IntRange(min=0), default=None, help="Only this partition.")
@click.option("--offset", "-o", type=click.IntRange(min=0), default=None, help="Start at this offset.")
@click.option(
    "-n", "count", type=click.IntRange(min=0), default=None, metavar="N",
    help="The last N records per partition [default: 10]; with --from-beginning or --offset, at most N.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def tail(
    bootstrap_servers: str | None, namespace: str | None, topic: str, from_beginning: bool, partition: int | None,
    offset: int | None, count: int | None, follow: bool, as_json: bool,
) -> None:
    """Print TOPIC's records decoded: partition, offset, timestamp, key, value, headers.

    TOPIC is a pipeline topic, short (events.raw.v1) or namespaced. Models-topic
    records show the envelope's metadata, never the payload.
    """
    if from_beginning and offset is not None:
        raise ConfigError("--from-beginning and --offset exclude each other")
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    decoder = TopicDecoder.from_settings(settings)
    name = decoder.resolve(topic)
    cluster = Cluster(settings)
    # Existence first, from metadata of all topics: asking for this one would auto-create it
    # (docs/embedded-broker.md#auto-create).
    cluster.require_topics([name])
    n_parts = cluster.partition_counts([name])[name]
    if partition is not None and partition >= n_parts:
        raise ConfigError(f"{name} has {n_parts} partition{'s' if n_parts > 1 else ''} (0..{n_parts - 1}); "
                          f"no partition {partition}")
    parts = [partition] if partition is not None else list(range(n_parts))
    # True ends from fetch responses (docs/embedded-broker.md#list-offsets).
    marks = watermarks(cluster, [(name, p) for p in range(n_parts)])
    start: dict[int, int] = {}
    for p in range(n_parts):
        low, end = marks[(name, p)]
        if p not in parts:
            start[p] = end  # read_to_end reads every partition: give the others nothing to read
        elif from_beginning:
            start[p] = low
        elif offset is not None:
            # Inside the log: an offset past the end would make the consumer reset to the start.
            start[p] = min(max(offset, low), end)
        else:
            start[p] = max(low, end - (10 if count is None else count))
    limit = count if (from_beginning or offset is not None) else None

    stop = threading.Event()
    stopped_by: list[str] = []
    if follow:
        # Ctrl-C ends a follow with one line and exit 0: the loop checks the event between short fetches.
        def on_signal(signum: int, _frame: Any) -> None:
            stopped_by.append(signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
    shown = {p: 0 for p in parts}
    positions = dict(start)
    try:
        for message in read_to_end(cluster, name, start=start):
            where, at = message.partition(), message.offset()
            if where is not None and at is not None and where in shown:
                positions[where] = max(positions[where], at + 1)
                if limit is None or shown[where] < limit:
                    shown[where] += 1
                    _print(decoder, message, as_json)
        if follow:
            for message in _follow(cluster, name, {p: positions[p] for p in parts}, stop):
                _print(decoder, message, as_json)
                shown[message.partition() or 0] = shown.get(message.partition() or 0, 0) + 1
            total = sum(shown.values())
            click.echo(f"{stopped_by[0]}: stopped after {total} record{'' if total == 1 else 's'}", err=True)
    except BrokenPipeError:
        # `streamml tail ... | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _follow(cluster: Cluster, topic: str, positions: dict[int, int], stop: threading.Event) -> Iterator[Message]:
    """Yield new records of ``topic`` from ``positions`` until ``stop`` is set."""
    consumer = cluster.consumer("reader")
    try:
        consumer.assign([
            TopicPartition(topic, p, o if o >= 0 else OFFSET_BEGINNING) for p, o in positions.items()
        ])
        while not stop.is_set():
            for message in consumer.consume(500, timeout=0.2):
                if not message.error():
                    yield message
    finally:
        consumer.close()


def _print(decoder: TopicDecoder, message: Message, as_json: bool) -> None:
    _, timestamp = message.timestamp()
    raw_headers = message.headers() or []
    headers = [(k, _bytes(v)) for k, v in (raw_headers.items() if isinstance(raw_headers, dict) else raw_headers)]
    record: dict[str, Any] = decoder.describe(
        message.topic() or "", message.partition() or 0, message.offset() or 0,
        timestamp if timestamp > 0 else None, _bytes(message.key()), _bytes(message.value()), headers,
    )
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) if as_json else format_line(record)
    click.echo(line)
    sys.stdout.flush()  # a follower behind a pipe sees each record when it arrives


def _bytes(raw: str | bytes | None) -> bytes | None:
    # confluent_kafka types keys, values and headers as str | bytes; a consumer without a deserializer gives bytes.
    return raw.encode() if isinstance(raw, str) else raw


COMMANDS = [tail]
