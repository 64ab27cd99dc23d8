"""A snapshot of the features topic as a pandas DataFrame, by partition and offset.

Batch (static) training reads the features topic between offsets, per
partition, so the same offsets give the same rows again: the offsets read go
into the model's lineage. A time range (``since_ms``/``until_ms``, event
time) is applied while reading. The end of each partition is fixed when
reading starts (the high watermark of the first fetch; see
:func:`streamml.reader.read_to_end`), so records that arrive meanwhile are
not half-included.

Memory is bounded: columns are built as float arrays (8 bytes a cell), and a
range holding more than ``max_rows`` labelled rows is refused with the
offsets to narrow it to, rather than read into swap. Rows without a label
(nothing to learn) are counted and left out. A feature absent from a record
is 0.0, as the online models take it (the processor leaves a one-hot
category out when it does not apply).
"""

from __future__ import annotations

import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from model_publisher.learner import partition_key
from streamml.cluster import Cluster
from streamml.errors import ConfigError, DecodeError
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml.records import FeatureVector, RecordCodec

if TYPE_CHECKING:
    import pandas

__all__ = ["Snapshot", "read_snapshot"]


@dataclass
class Snapshot:
    """Labelled feature rows in event-time order, and exactly which records they came from."""

    frame: pandas.DataFrame
    labels: list[Any]
    event_times: list[int]
    #: ``topic[partition]`` -> ``(first offset read, next offset after the last read)``.
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    unlabelled: int = 0
    undecodable: int = 0
    #: ``(partition, offset)`` of each row, in row order.
    positions: list[tuple[int, int]] = field(default_factory=list)
    topic: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def end_offsets(self) -> dict[str, int]:
        """``topic[partition]`` -> the next offset after the snapshot (what a model trained on it has seen)."""
        return {key: end for key, (_start, end) in self.ranges.items()}

    def hold_back(self, learned: Mapping[str, int], n: int) -> tuple[Snapshot, list[tuple[dict[str, float], Any]]]:
        """Take out the newest ``n`` rows at or past ``learned`` (``topic[partition]`` -> offset).

        Returns the snapshot without them and the rows as ``(features, label)``:
        events a champion that learned up to ``learned`` has not seen, for the
        quality gate. Fewer than ``n`` when fewer are there.
        """
        eligible = [
            i for i, (p, o) in enumerate(self.positions) if o >= learned.get(partition_key(self.topic, p), 0)
        ]
        taken = set(eligible[-n:]) if n > 0 else set()
        if not taken:
            return self, []
        kept = [i for i in range(len(self)) if i not in taken]
        frame = self.frame
        events = [
            ({str(k): float(v) for k, v in frame.iloc[i].items()}, self.labels[i]) for i in sorted(taken)
        ]
        rest = Snapshot(
            frame.iloc[kept].reset_index(drop=True), [self.labels[i] for i in kept],
            [self.event_times[i] for i in kept], dict(self.ranges), self.unlabelled, self.undecodable,
            [self.positions[i] for i in kept], self.topic,
        )
        return rest, events

    def lineage(self) -> dict[str, str]:
        """The snapshot's coordinates as envelope lineage entries."""
        return {
            "snapshot_offsets": ",".join(f"{k}={a}-{b}" for k, (a, b) in sorted(self.ranges.items())),
            "snapshot_rows": str(len(self)),
            "snapshot_unlabelled": str(self.unlabelled),
            "snapshot_event_time": f"{min(self.event_times)}-{max(self.event_times)}" if self.event_times else "",
        }


def read_snapshot(
    cluster: Cluster,
    topic: str,
    *,
    start: Mapping[int, int] | None = None,
    end: Mapping[int, int] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    max_rows: int = 1_000_000,
    timeout: float = 120.0,
) -> Snapshot:
    """Read ``topic`` from ``start`` (default: each partition's beginning) up to ``end`` (default: its end now).

    Raises :class:`ConfigError` for a partition the topic does not have, or
    when the range holds more than ``max_rows`` labelled rows.
    """
    import pandas

    parts = cluster.partitions(topic)
    for name, given in (("start", start), ("end", end)):
        unknown = sorted(set(given or {}) - set(parts))
        if unknown:
            raise ConfigError(f"{name} offsets name partitions {unknown} that {topic} does not have (it has {parts})")
    codec = RecordCodec(FeatureVector)
    columns: dict[str, array.array[float]] = {}
    labels: list[Any] = []
    times: list[int] = []
    positions: list[tuple[int, int]] = []
    ranges: dict[str, tuple[int, int]] = {}
    snapshot_counts = {"unlabelled": 0, "undecodable": 0}
    stop_at = dict(end or {})
    for message in read_to_end(cluster, topic, start=dict(start or {}), timeout=timeout):
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        if partition in stop_at and offset >= stop_at[partition]:
            continue
        key = partition_key(topic, partition)
        first = ranges.get(key, (offset, offset))[0]
        ranges[key] = (first, offset + 1)
        try:
            record = codec.decode(message.value(), record_headers(message))
        except DecodeError:
            snapshot_counts["undecodable"] += 1
            continue
        if record.label is None:
            snapshot_counts["unlabelled"] += 1
            continue
        if (since_ms is not None and record.event_time < since_ms) or (
            until_ms is not None and record.event_time >= until_ms
        ):
            continue
        if len(labels) >= max_rows:
            where = ", ".join(f"{k} up to {b}" for k, (_a, b) in sorted(ranges.items()))
            raise ConfigError(
                f"the snapshot holds more than {max_rows} labelled rows (read {where}): narrow it with "
                "--from-offsets/--to-offsets or --since/--until, or raise --max-rows"
            )
        row = len(labels)
        for name, value in record.features.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = array.array("d", bytes(8 * row))  # absent so far: 0.0
            column.append(float(value))
        labels.append(record.label)
        times.append(record.event_time)
        positions.append((partition, offset))
        for column in columns.values():
            if len(column) == row:  # absent from this record
                column.append(0.0)
    frame = pandas.DataFrame({name: columns[name] for name in sorted(columns)})
    # Time order for the holdout; a stable sort keeps partition order among equal times.
    order = sorted(range(len(times)), key=times.__getitem__)
    frame = frame.iloc[order].reset_index(drop=True)
    return Snapshot(
        frame,
        [labels[i] for i in order],
        [times[i] for i in order],
        ranges,
        snapshot_counts["unlabelled"],
        snapshot_counts["undecodable"],
        [positions[i] for i in order],
        topic,
    )
