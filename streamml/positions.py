"""Where a read "from the beginning" starts, resolved before it is assigned.

A consumer assigned at ``OFFSET_BEGINNING`` makes librdkafka look the log
start up itself before its first fetch; against the embedded broker that
first fetch comes about 0.5 s later than one assigned at a concrete offset
(7 ms), whatever the fetch, retry and backoff settings
(``docs/embedded-broker.md#offset-beginning``). Every start-up read of the
learner and the publisher (the models topic, the feedback guard's peek, the
history's end) paid it once per read. :func:`from_beginning` asks the log
start with ``ListOffsets(earliest)`` (right on every broker, a few
milliseconds) and assigns that offset instead. Should the log start move
before the fetch (retention), the consumer's ``auto.offset.reset=earliest``
takes it to the new start, as ``OFFSET_BEGINNING`` would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

__all__ = ["from_beginning"]


def from_beginning(
    consumer: Consumer, partitions: Iterable[TopicPartition], *, timeout: float = 5.0
) -> list[TopicPartition]:
    """Return ``partitions`` with each ``OFFSET_BEGINNING`` replaced by its log-start offset.

    Other offsets are kept. A partition whose log start cannot be listed
    within ``timeout`` (all requests share it) keeps ``OFFSET_BEGINNING``: slower, never wrong.
    """
    deadline = time.monotonic() + timeout
    resolved = []
    for tp in partitions:
        offset = tp.offset
        if offset == OFFSET_BEGINNING:
            left = deadline - time.monotonic()
            if left > 0:
                try:
                    low, _ = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=left)
                    if low >= 0:
                        offset = low
                except KafkaException:
                    pass  # OFFSET_BEGINNING it stays: librdkafka looks the start up itself
        resolved.append(TopicPartition(tp.topic, tp.partition, offset))
    return resolved
