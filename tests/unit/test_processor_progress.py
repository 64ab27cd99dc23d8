"""The stream processor's counts line: consumed, featurized, quarantined by rule, lag."""

from __future__ import annotations

from stream_processors.batches import BatchResult, SourceRecord
from stream_processors.progress import Progress


def records(partition: int, offsets: range) -> list[SourceRecord]:
    return [SourceRecord(b"v", None, (), "raw", partition, offset) for offset in offsets]


def test_counts_add_up_batch_by_batch_with_the_rules_most_frequent_first() -> None:
    progress = Progress()
    assert progress.line() == "consumed 0, featurized 0, quarantined 0"
    first = BatchResult()
    first.features = [object()] * 7  # type: ignore[list-item]  # only counted
    first.quarantined.update({"below_min": 1, "required": 2})
    progress.add(records(0, range(10)), first)
    second = BatchResult()
    second.quarantined.update({"below_min": 2})
    progress.add(records(1, range(5, 7)), second)
    assert progress.line() == "consumed 12, featurized 7, quarantined 5 (below_min 3, required 2)"


def test_lag_is_what_is_left_in_the_partitions_read_and_unknown_without_a_high_watermark() -> None:
    progress = Progress()
    assert progress.lag(lambda topic, partition: 10) is None  # nothing read yet
    progress.add(records(0, range(10)), BatchResult())
    progress.add(records(2, range(3)), BatchResult())
    ends = {0: 10, 2: 8}
    assert progress.lag(lambda topic, partition: ends[partition]) == 5
    assert progress.line(5).endswith(", lag 5")
    assert progress.lag(lambda topic, partition: None) is None
