"""Consumer lag per group, topic and partition, correct on any Kafka-protocol broker.

Lag is ``log-end offset - committed offset``. The log-end offset is taken from
the high watermark a *fetch response* carries, because a ``ListOffsets``
request (what ``get_watermark_offsets()`` and ``AdminClient.list_offsets()``
send) returns the base offset of the last batch + 1 on the embedded Tansu
broker (``docs/embedded-broker.md#list-offsets``). On Apache Kafka both agree, and the larger of
the two is used, so the answer is right on both.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from streamml.cluster import ADMIN_GRACE, Cluster
from streamml.errors import KafkaClientError
from streamml.kafka import describe_error

__all__ = ["PartitionLag", "GroupLag", "watermarks", "log_end_offsets", "partition_lag", "consumer_lag", "pipeline_lag"]


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one group on one partition. ``committed`` is None when nothing is committed yet."""

    group: str
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int


@dataclass(frozen=True)
class GroupLag:
    """A group's partitions and its total lag."""

    group: str
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, object]:
        return {"group": self.group, "total_lag": self.total, "partitions": [asdict(p) for p in self.partitions]}


def watermarks(
    cluster: Cluster, partitions: Iterable[tuple[str, int]], *, timeout: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """Return ``(log-start, log-end)`` offsets of each ``(topic, partition)``.

    Fetches from each partition's start with a throw-away, never-committing
    consumer and reads the high watermark from the fetch responses; the
    ``ListOffsets`` answer is used where it is larger (it never is on Tansu,
    it agrees on Apache Kafka). The log start is ``ListOffsets(earliest)``,
    which is right on both. The fetches and the listing get ``timeout`` each,
    so the call returns within about twice ``timeout`` (plus the consumer's close).
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    consumer = cluster.consumer("lag-probe", **{"max.partition.fetch.bytes": 1})
    fetched: dict[tuple[str, int], int] = {}
    marks: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted])
        deadline = time.monotonic() + timeout
        while len(fetched) < len(wanted) and time.monotonic() < deadline:
            consumer.poll(0.05)
            for tp in wanted:
                if tp in fetched:
                    continue
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                if high >= 0:
                    fetched[tp] = high
        # One bound for all the ListOffsets requests, not one each: a broker that
        # stops answering must not cost ``timeout`` per partition.
        listing_deadline = time.monotonic() + timeout
        for tp in wanted:
            left = max(0.1, listing_deadline - time.monotonic())
            try:
                low, listed = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=left, cached=False)
            except KafkaException as exc:
                if tp not in fetched:
                    raise KafkaClientError(
                        f"cannot read the log-end offset of {tp[0]}[{tp[1]}]: {describe_error(exc)}"
                    ) from exc
                low, listed = 0, fetched[tp]
            marks[tp] = (max(low, 0), max(fetched.get(tp, listed), listed))
    finally:
        consumer.close()
    return marks


def log_end_offsets(
    cluster: Cluster, partitions: Iterable[tuple[str, int]], *, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """Return the true log-end offset of each ``(topic, partition)`` (see :func:`watermarks`)."""
    return {tp: high for tp, (_, high) in watermarks(cluster, partitions, timeout=timeout).items()}


def _committed(cluster: Cluster, group: str, timeout: float) -> dict[tuple[str, int], int | None]:
    try:
        futures = cluster.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
        )
        result = futures[group].result(timeout=timeout + ADMIN_GRACE)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read committed offsets of group {group}: {describe_error(exc)}") from exc
    except FutureTimeout as exc:
        raise KafkaClientError(
            f"cannot read committed offsets of group {group}: no answer within {timeout + ADMIN_GRACE:g}s"
        ) from exc
    committed: dict[tuple[str, int], int | None] = {}
    for tp in result.topic_partitions or []:
        committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return committed



def partition_lag(committed: int | None, log_start: int, log_end: int) -> int:
    """Records a group still has to read on one partition.

    Records below the log start are gone (retention or deleted records), so a
    group that committed nothing, or committed below the start, counts from
    the start.
    """
    position = log_start if committed is None else max(committed, log_start)
    return max(log_end - position, 0)


def consumer_lag(
    cluster: Cluster,
    groups: Iterable[str],
    *,
    topics: dict[str, list[str]] | None = None,
    timeout: float = 10.0,
) -> list[GroupLag]:
    """Return the lag of each group on every partition of the topics it consumes.

    A group's topics are those it has committed offsets for, plus any listed
    for it in ``topics`` (so a group that has not committed yet shows its whole
    backlog). Partitions without a committed offset count from the log start.
    """
    per_group: dict[str, dict[tuple[str, int], int | None]] = {}
    needed_topics: set[str] = set()
    for group in groups:
        committed = _committed(cluster, group, timeout)
        group_topics = {t for t, _ in committed} | set((topics or {}).get(group, []))
        per_group[group] = committed
        needed_topics |= group_topics
    counts = cluster.partition_counts(needed_topics, timeout)
    all_partitions: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for group, committed in per_group.items():
        group_topics = {t for t, _ in committed} | set((topics or {}).get(group, []))
        for topic in sorted(group_topics):
            for partition in range(counts.get(topic, 0)):
                all_partitions[group].append((topic, partition))
    marks = watermarks(cluster, [tp for tps in all_partitions.values() for tp in tps], timeout=timeout)
    report = []
    for group, committed in per_group.items():
        rows = []
        for tp in all_partitions[group]:
            start, end = marks.get(tp, (0, 0))
            offset = committed.get(tp)
            rows.append(PartitionLag(group, tp[0], tp[1], offset, end, partition_lag(offset, start, end)))
        report.append(GroupLag(group, rows))
    return report


def pipeline_lag(cluster: Cluster, only: str | None = None, timeout: float = 10.0) -> list[GroupLag]:
    """Lag of the pipeline's groups (or only ``only``), each over the topics it reads.

    Besides the components' own groups, any other committing group of this
    namespace (``<namespace>streamml.*``) is included; short-lived readers are not.
    """
    groups = cluster.groups
    reads = groups.reads(cluster.topics, delayed_labels=cluster.settings.label_mode == "delayed")
    if only:
        names = [only]
    else:
        extra = [
            g for g in cluster.list_groups(timeout) if g.startswith(groups.prefix) and not groups.is_ephemeral(g)
        ]
        names = sorted(set(groups.all()) | set(extra))
    return consumer_lag(cluster, names, topics={g: reads.get(g, []) for g in names}, timeout=timeout)
