"""Consumer lag per group, topic and partition, in records and in time, correct on any Kafka-protocol broker.

Lag is ``log-end offset - committed offset``. The log-end offset is taken from
the high watermark a *fetch response* carries, because a ``ListOffsets``
request (what ``get_watermark_offsets()`` and ``AdminClient.list_offsets()``
send) returns the base offset of the last batch + 1 on the embedded Tansu
broker (``docs/embedded-broker.md#list-offsets``). On Apache Kafka both agree, and the larger of
the two is used, so the answer is right on both.

Lag in time is the age of the oldest record the group has not consumed: the
timestamp of the record at its committed offset, read with a never-committing
``assign()`` consumer (``docs/lag.md``). Lag is never negative: a value that
would be is clamped to 0 and the row's ``note`` says why. A broker that cannot
be read raises :class:`~streamml.errors.KafkaClientError`;
:func:`observe_lag` turns that into groups whose lag is *unknown*
(:meth:`GroupLag.unknown`), never zero.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from streamml.cluster import ADMIN_GRACE, Cluster
from streamml.errors import BrokerError, KafkaClientError
from streamml.kafka import describe_error
from streamml.lag_time import record_age, timestamps_at
from streamml.positions import from_beginning

__all__ = [
    "PartitionLag", "GroupLag", "watermarks", "log_end_offsets", "partition_lag", "consumer_lag", "pipeline_lag",
    "observe_lag", "commit_intervals", "AUTO_COMMIT_SECONDS",
]

#: librdkafka's ``auto.commit.interval.ms`` default (5 s), which the scorer and the learner keep.
AUTO_COMMIT_SECONDS = 5.0


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one group on one partition.

    ``committed`` is None when nothing is committed yet. ``lag`` is in records,
    never negative. ``lag_seconds`` is the age of the oldest unconsumed record
    (0.0 when ``lag`` is 0), None when it could not be read. ``note`` says when
    a value was clamped or records were lost to retention.
    """

    group: str
    topic: str
    partition: int
    committed: int | None
    log_end: int
    lag: int
    log_start: int = 0
    lag_seconds: float | None = None
    note: str = ""


@dataclass(frozen=True)
class GroupLag:
    """A group's partitions and its total lag; ``error`` set means its lag is unknown (not zero)."""

    group: str
    partitions: list[PartitionLag]
    error: str | None = None

    @classmethod
    def unknown(cls, group: str, reason: str) -> GroupLag:
        """A group whose lag could not be read (``reason``: why, e.g. the broker did not answer)."""
        return cls(group, [], reason)

    @property
    def known(self) -> bool:
        """Whether the lag was read; an unknown group's ``total`` means nothing."""
        return self.error is None

    @property
    def total(self) -> int:
        """Records the group still has to read (0 for an unknown group: check :attr:`known`)."""
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form; an unknown group has ``total_lag: null`` and its ``error``."""
        return {
            "group": self.group,
            "total_lag": self.total if self.known else None,
            "error": self.error,
            "partitions": [asdict(p) for p in self.partitions],
        }


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
        consumer.assign(from_beginning(consumer, [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in wanted]))
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
    """Records a group still has to read on one partition, never negative.

    Records below the log start are gone (retention or deleted records), so a
    group that committed nothing, or committed below the start, counts from
    the start. A commit past the end (a recreated topic) counts as 0.
    """
    position = log_start if committed is None else max(committed, log_start)
    return max(log_end - position, 0)


def _note(committed: int | None, log_start: int, log_end: int) -> str:
    """Why a partition's lag is not plainly ``log_end - committed`` (empty when it is)."""
    if committed is not None and committed > log_end:
        return (f"committed offset {committed} is past the log end {log_end} (topic recreated or truncated?): "
                "lag clamped to 0")
    if committed is not None and committed < log_start:
        return f"records {committed}..{log_start - 1} were deleted (retention) before the group read them"
    return ""


def consumer_lag(
    cluster: Cluster,
    groups: Iterable[str],
    *,
    topics: dict[str, list[str]] | None = None,
    timeout: float = 10.0,
    lag_time: bool = True,
    time_timeout: float = 2.0,
) -> list[GroupLag]:
    """Return the lag of each group on every partition of the topics it consumes.

    A group's topics are those it has committed offsets for, plus any listed
    for it in ``topics`` (so a group that has not committed yet shows its whole
    backlog). Partitions without a committed offset count from the log start.
    With ``lag_time`` the age of each partition's oldest unconsumed record is
    read too (within ``time_timeout`` seconds; ``lag_seconds`` is None where it
    could not be). Raises :class:`KafkaClientError` when the broker cannot be
    read: a lag that is not known is never reported as 0.
    """
    per_group: dict[str, dict[tuple[str, int], int | None]] = {}
    wanted: dict[str, set[str]] = {}
    for group in groups:
        committed = _committed(cluster, group, timeout)
        per_group[group] = committed
        wanted[group] = {t for t, _ in committed} | set((topics or {}).get(group, []))
    counts = cluster.partition_counts(set().union(*wanted.values()), timeout)
    all_partitions: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for group in per_group:
        for topic in sorted(wanted[group]):
            all_partitions[group].extend((topic, partition) for partition in range(counts.get(topic, 0)))
    marks = watermarks(cluster, [tp for tps in all_partitions.values() for tp in tps], timeout=timeout)
    rows: dict[str, list[tuple[tuple[str, int], int | None, int, int, int]]] = defaultdict(list)
    unread: dict[tuple[str, int], set[int]] = defaultdict(set)  # positions whose record's age is wanted
    for group, committed in per_group.items():
        for tp in all_partitions[group]:
            start, end = marks.get(tp, (0, 0))
            offset = committed.get(tp)
            position = start if offset is None else max(offset, start)
            rows[group].append((tp, offset, start, end, position))
            if lag_time and partition_lag(offset, start, end) > 0:
                unread[tp].add(position)
    stamps = timestamps_at(cluster, unread, timeout=time_timeout)
    now = time.time()
    report = []
    for group in per_group:
        partitions = []
        for tp, offset, start, end, position in rows[group]:
            lag = partition_lag(offset, start, end)
            seconds, late = (0.0, "") if lag == 0 else record_age(stamps.get((tp, position)), now)
            note = "; ".join(filter(None, [_note(offset, start, end), late]))
            partitions.append(PartitionLag(group, tp[0], tp[1], offset, end, lag, start, seconds, note))
        report.append(GroupLag(group, partitions))
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


def observe_lag(cluster: Cluster, only: str | None = None, timeout: float = 10.0) -> list[GroupLag]:
    """:func:`pipeline_lag`, but a broker that cannot be read gives groups of *unknown* lag instead of raising.

    For a monitor loop: each component group (or ``only``) comes back as
    :meth:`GroupLag.unknown` with the reason, which
    :class:`~streamml.lag_status.LagEvaluator` rates ERROR.
    """
    try:
        return pipeline_lag(cluster, only, timeout=timeout)
    except (KafkaClientError, BrokerError) as exc:
        return [GroupLag.unknown(group, str(exc)) for group in ([only] if only else cluster.groups.all())]


def commit_intervals(cluster: Cluster) -> dict[str, float]:
    """Seconds each component group may go without moving its committed offset while healthy.

    The processor commits every ``processor_commit_interval_seconds``; the
    scorer stores offsets as it scores and librdkafka commits them every
    :data:`AUTO_COMMIT_SECONDS`; the learner stores offsets only when it
    publishes a version (at most ``publish_every_seconds`` apart), then
    auto-commits. Give this to :class:`~streamml.lag_status.LagEvaluator` so
    a learner between two versions is not taken for a stalled one.
    """
    settings, groups = cluster.settings, cluster.groups
    return {
        groups.processor: settings.processor_commit_interval_seconds,
        groups.scorer: AUTO_COMMIT_SECONDS,
        groups.learner: settings.publish_every_seconds + AUTO_COMMIT_SECONDS,
    }
