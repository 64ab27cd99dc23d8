"""Lag arithmetic per partition (the broker reads are covered by integration tests)."""

from __future__ import annotations

import pytest

from streamml.lag import partition_lag


@pytest.mark.parametrize(
    ("committed", "start", "end", "lag"),
    [
        (None, 0, 100, 100),  # nothing committed: the whole log
        (60, 0, 100, 40),
        (100, 0, 100, 0),
        (None, 40, 100, 60),  # retention trimmed the first 40: they cannot be read any more
        (10, 40, 100, 60),  # committed below the log start counts from the start
        (120, 0, 100, 0),  # a commit past the end (e.g. a recreated topic) is not negative lag
    ],
)
def test_partition_lag(committed: int | None, start: int, end: int, lag: int) -> None:
    assert partition_lag(committed, start, end) == lag
