"""Read a topic from the start to its current end, without a consumer group.

"The end" is the high watermark carried by fetch responses, which is right on
every broker; ``ListOffsets`` under-reports it on the embedded broker
(``docs/embedded-broker.md#list-offsets``). Used by ``streamml models list``, the demo's monitor
and the tests.
"""

from __future__ import annotations

import time
from collections.abc import Generator

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from streamml.cluster import Cluster
from streamml.errors import KafkaClientError

__all__ = ["read_to_end"]


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
    consumer = cluster.consumer("reader")
    try:
        offsets = {p: (start or {}).get(p, OFFSET_BEGINNING) for p in parts}
        consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items()])
        ends: dict[int, int] = {}
        positions = {p: (o if o >= 0 else None) for p, o in offsets.items()}
        deadline = time.monotonic() + timeout
        while True:
            for message in consumer.consume(500, timeout=0.05):
                if message.error():
                    continue
                partition, offset = message.partition(), message.offset()
                assert partition is not None and offset is not None  # set on every consumed record
                positions[partition] = offset + 1
                yield message
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
            if len(ends) == len(parts) and all((positions[p] or 0) >= ends[p] for p in parts):
                return
            if time.monotonic() > deadline:
                raise KafkaClientError(f"could not read {topic} to its end within {timeout:g}s")
    finally:
        consumer.close()
