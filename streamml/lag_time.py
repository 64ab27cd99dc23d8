"""Lag in time: the age of the oldest record a consumer group has not consumed yet.

The age is read from the record itself (its timestamp: the producer's create
time, or the broker's append time on a ``LogAppendTime`` topic), at the
group's committed offset, with a throw-away ``assign()`` consumer that commits
nothing and reads for a bounded time. :mod:`streamml.lag` puts it next to the
lag in records.
"""

from __future__ import annotations

import time

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, TopicPartition

from streamml.cluster import Cluster

__all__ = ["record_age", "oldest_unconsumed_timestamps", "timestamps_at"]

TopicPart = tuple[str, int]


def record_age(timestamp_ms: int | None, now: float) -> tuple[float | None, str]:
    """Age in seconds at ``now`` (epoch seconds) of a record stamped ``timestamp_ms``, and a note.

    A timestamp in the future (producer clock skew) is clamped to age 0 and the
    note says so; no timestamp gives ``(None, "")``.
    """
    if timestamp_ms is None:
        return None, ""
    age = now - timestamp_ms / 1000
    if age < 0:
        return 0.0, f"oldest unconsumed record is stamped {-age:.1f}s in the future (clock skew?): age clamped to 0"
    return round(age, 3), ""


def oldest_unconsumed_timestamps(
    cluster: Cluster, positions: dict[TopicPart, int], *, timeout: float = 2.0
) -> dict[TopicPart, int | None]:
    """Return the timestamp (epoch ms) of the first record at or after each ``(topic, partition): offset``.

    Reads one record per partition with a throw-away ``assign()`` consumer
    that commits nothing, for at most ``timeout`` seconds. It reads
    uncommitted records too (a record of a transaction still open is
    unconsumed all the same, and counted in the lag). A partition whose
    record could not be read in time, or holds no data record past the
    offset, maps to None.
    """
    found: dict[TopicPart, int | None] = {tp: None for tp in positions}
    if not positions:
        return found
    consumer = cluster.consumer(
        "lag-probe",
        **{"max.partition.fetch.bytes": 1, "enable.partition.eof": True, "isolation.level": "read_uncommitted"},
    )
    pending = set(positions)
    try:
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is None:
                continue
            tp = (message.topic() or "", message.partition() or 0)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)  # only control or deleted records left: no age to give
                continue
            if tp in pending:
                kind, stamp = message.timestamp()
                found[tp] = None if kind == TIMESTAMP_NOT_AVAILABLE else stamp
                pending.discard(tp)
    finally:
        consumer.close()
    return found


def timestamps_at(
    cluster: Cluster, wanted: dict[TopicPart, set[int]], *, timeout: float = 2.0
) -> dict[tuple[TopicPart, int], int | None]:
    """Timestamps of the first record at or after each wanted ``(partition, offset)``.

    A consumer reads a partition from one offset, so groups at different
    offsets of one partition (the learner and the scorer on the features) take
    one probe (one ``timeout``) each; groups at the same offset share one.
    """
    stamps: dict[tuple[TopicPart, int], int | None] = {}
    ordered = {tp: sorted(offsets) for tp, offsets in wanted.items()}
    for round_ in range(max((len(offsets) for offsets in ordered.values()), default=0)):
        batch = {tp: offsets[round_] for tp, offsets in ordered.items() if len(offsets) > round_}
        for tp, stamp in oldest_unconsumed_timestamps(cluster, batch, timeout=timeout).items():
            stamps[(tp, batch[tp])] = stamp
    return stamps
