"""Read a topic from the start to its current end, without a consumer group.

"The end" is the high watermark carried by fetch responses, which is right on
every broker; ``ListOffsets`` under-reports it on the embedded broker
(``docs/embedded-broker.md#list-offsets``). Used by ``streamml models list``, the demo's monitor
and the tests.

Where the reader stands is the consumer's own position, not the offset of the
last record plus one: a transaction's commit or abort marker (what the model
publisher writes after every version) takes an offset of the log but is never
delivered, so a topic that ends in one would otherwise never be read "to the
end". A partition whose stable end is reached (librdkafka's partition-EOF
event) is done too: a reader in ``read_committed`` cannot pass a transaction
still open (a publish in flight), and stops before it instead of waiting for it.
"""

from __future__ import annotations

import time
from collections.abc import Generator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from streamml.cluster import Cluster
from streamml.errors import ConfigError, KafkaClientError
from streamml.positions import from_beginning

__all__ = ["read_to_end", "parse_offsets"]


def parse_offsets(text: str | None) -> dict[int, int] | None:
    """``"0:120,1:0"`` -> ``{0: 120, 1: 0}``; ``None`` or empty -> ``None``. :class:`ConfigError` when malformed.

    The syntax of every ``--from-offsets``/``--to-offsets`` option (a range
    of a topic to read, by partition and offset).
    """
    if not text:
        return None
    result: dict[int, int] = {}
    for part in text.split(","):
        p, sep, o = part.strip().partition(":")
        if not sep or not p.strip().isdigit() or not o.strip().isdigit():
            raise ConfigError(f"offsets: {part.strip()!r} is not PARTITION:OFFSET (example: 0:120,1:0)")
        result[int(p)] = int(o)
    return result


def read_to_end(
    cluster: Cluster,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    timeout: float = 30.0,
) -> Generator[Message, None, None]:
    """Yield every record of ``topic`` from ``start`` (default: the beginning) to the end.

    The end is fixed by the first fetch response of each partition, so records
    produced while reading may or may not be included. Raises
    :class:`KafkaClientError` if the end is not reached within ``timeout``.
    """
    parts = cluster.partitions(topic)
    if not parts:
        return
    consumer = cluster.consumer("reader", **{"enable.partition.eof": True})
    try:
        offsets = {p: (start or {}).get(p, OFFSET_BEGINNING) for p in parts}
        consumer.assign(from_beginning(consumer, [TopicPartition(topic, p, o) for p, o in offsets.items()]))
        ends: dict[int, int] = {}
        #: Partitions whose stable end was reached (a partition-EOF event).
        stable: set[int] = set()
        positions = {p: (o if o >= 0 else None) for p, o in offsets.items()}
        deadline = time.monotonic() + timeout
        while True:
            for message in consumer.consume(500, timeout=0.05):
                error, partition = message.error(), message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        stable.add(partition)
                    continue
                assert partition is not None  # set on every consumed record
                stable.discard(partition)  # not at the end after all: a record came after the event
                yield message
            _update_positions(consumer, topic, positions)
            for p in parts:
                if p not in ends:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                    if high >= 0:
                        ends[p] = high
                        if positions[p] is None:
                            # Nothing read yet: start from the log start. Older
                            # fetch responses carry no log start; ListOffsets'
                            # earliest is right on every broker.
                            if low < 0:
                                low, _ = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                            positions[p] = max(low, 0)
            if len(ends) == len(parts) and all(p in stable or (positions[p] or 0) >= ends[p] for p in parts):
                return
            if time.monotonic() > deadline:
                raise KafkaClientError(f"could not read {topic} to its end within {timeout:g}s")
    finally:
        consumer.close()


def _update_positions(consumer: Consumer, topic: str, positions: dict[int, int | None]) -> None:
    """Take the consumer's position of each partition where it has one (it moves past control records)."""
    for tp in consumer.position([TopicPartition(topic, p) for p in positions]):
        if tp.offset >= 0 and tp.error is None:
            positions[tp.partition] = max(tp.offset, positions[tp.partition] or 0)
