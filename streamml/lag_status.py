"""A verdict on consumer lag: Burrow-style evaluation over a sliding window of observations.

Numbers alone do not say whether a consumer is healthy: a lag of 5,000 can be
a consumer keeping up with a busy topic, or one that died an hour ago. Like
LinkedIn's Burrow (its "consumer lag evaluation rules"), :class:`LagEvaluator`
keeps the last ``window`` observations of each partition (committed offset,
log end, lag) and rates it, first rule that applies wins:

========  ==================================================================
ERROR     lag unknown (the broker could not be read), or no committed offset
          while records wait
STOPPED   lag > 0 and the committed offset has not moved for
          ``stopped_after_seconds`` (or the group's commit interval, if longer)
OK        fewer than 2 observations ("not enough observations"), or lag 0 at
          any observation of the window
WARNING   the committed offset went back in the window (a reset or a replay)
STALLED   the committed offset is the same across the whole window, lag > 0
          throughout, for longer than the group's commit interval
WARNING   commits move but the lag grew at every step of the window
OK        otherwise: the consumer is keeping up
========  ==================================================================

Offsets read from the broker carry no commit time, so "committing the same
offset" (STALLED) and "not committing" (STOPPED) look alike here; they are
told apart by how long the offset has not moved. ``docs/lag.md`` has the
details and what to do about each status. Pure: no broker, no clock (the
caller gives each observation's time).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from streamml.errors import ConfigError
from streamml.lag import GroupLag, PartitionLag

__all__ = ["LagStatus", "PartitionStatus", "GroupStatus", "LagEvaluator"]


class LagStatus(str, enum.Enum):
    """A consumer's health, declared from the best to the worst (:attr:`severity`)."""

    OK = "OK"
    WARNING = "WARNING"
    STALLED = "STALLED"
    STOPPED = "STOPPED"
    ERROR = "ERROR"

    @property
    def severity(self) -> int:
        """0 for OK up to 4 for ERROR: compare statuses with it."""
        return list(LagStatus).index(self)

    @classmethod
    def worst(cls, statuses: Iterable[LagStatus]) -> LagStatus:
        """The most severe of ``statuses`` (OK when there are none)."""
        return max(statuses, key=lambda status: status.severity, default=cls.OK)


@dataclass(frozen=True)
class PartitionStatus:
    """The verdict on one group's partition, with its latest lag and why."""

    group: str
    topic: str
    partition: int
    status: LagStatus
    lag: int
    lag_seconds: float | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status.value}


@dataclass(frozen=True)
class GroupStatus:
    """The verdict on a group: the worst of its partitions.

    ``total_lag`` is None when the lag is unknown (status ERROR): never 0 for
    a lag that was not read. ``max_lag_seconds`` is the oldest unconsumed
    record's age over the partitions where it is known (None if nowhere).
    """

    group: str
    status: LagStatus
    partitions: list[PartitionStatus]
    total_lag: int | None
    max_lag_seconds: float | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group, "status": self.status.value, "total_lag": self.total_lag,
            "max_lag_seconds": self.max_lag_seconds, "reason": self.reason,
            "partitions": [p.as_dict() for p in self.partitions],
        }


@dataclass(frozen=True)
class _Seen:
    at: float
    committed: int | None
    lag: int


class LagEvaluator:
    """Rates each group and partition over its last ``window`` observations (see the module docstring).

    ``stopped_after_seconds``: how long an unmoving committed offset with lag
    > 0 takes to be STOPPED. ``commit_intervals``: per group, how long it may
    go between commits when healthy (:func:`streamml.lag.commit_intervals`);
    an unmoving offset is STALLED only past it (groups not listed: 0).
    Feed it one report per observation, in time order; not thread-safe.
    """

    def __init__(
        self,
        window: int = 10,
        stopped_after_seconds: float = 60.0,
        *,
        commit_intervals: Mapping[str, float] | None = None,
    ) -> None:
        if window < 2:
            raise ConfigError(f"lag window: must be at least 2 observations, got {window}")
        if stopped_after_seconds <= 0:
            raise ConfigError(f"stopped after: must be more than 0 seconds, got {stopped_after_seconds:g}")
        self.window = window
        self.stopped_after_seconds = stopped_after_seconds
        self.commit_intervals = dict(commit_intervals or {})
        self._seen: dict[tuple[str, str, int], deque[_Seen]] = {}
        #: When the current committed offset was first seen with lag > 0 (kept past the window).
        self._since: dict[tuple[str, str, int], tuple[int | None, float]] = {}

    def observe(self, report: list[GroupLag], at: float) -> list[GroupStatus]:
        """Add one observation (``at``: its ``time.time()``) and return every group's verdict, in report order.

        A group whose lag is unknown is ERROR and keeps its history, so
        evaluation resumes where it was once the broker answers again.
        """
        statuses = []
        for group in report:
            if not group.known:
                unknown = GroupStatus(group.group, LagStatus.ERROR, [], None, None, f"lag unknown: {group.error}")
                statuses.append(unknown)
                continue
            current = {(row.group, row.topic, row.partition) for row in group.partitions}
            for key in [k for k in self._seen if k[0] == group.group and k not in current]:
                del self._seen[key]  # a partition the group no longer reads
                self._since.pop(key, None)
            partitions = [self._partition(row, at) for row in group.partitions]
            statuses.append(_group_status(group.group, partitions))
        return statuses

    def _partition(self, row: PartitionLag, at: float) -> PartitionStatus:
        key = (row.group, row.topic, row.partition)
        seen = self._seen.setdefault(key, deque(maxlen=self.window))
        seen.append(_Seen(at, row.committed, row.lag))
        if row.lag == 0:
            self._since.pop(key, None)
        elif key not in self._since or self._since[key][0] != row.committed:
            self._since[key] = (row.committed, at)  # lag began, or the offset moved: the clock starts again
        status, reason = self._rate(row, list(seen), at)
        if row.note:
            reason = f"{reason}; {row.note}"
        return PartitionStatus(row.group, row.topic, row.partition, status, row.lag, row.lag_seconds, reason)

    def _rate(self, row: PartitionLag, seen: list[_Seen], at: float) -> tuple[LagStatus, str]:
        """Burrow's rules, in the order of the module docstring's table."""
        lag, committed = row.lag, row.committed
        if lag > 0 and committed is None:
            return LagStatus.ERROR, f"no committed offset while {lag} records wait"
        interval = self.commit_intervals.get(row.group, 0.0)
        unmoved = at - self._since[(row.group, row.topic, row.partition)][1] if lag > 0 else 0.0
        stopped_after = max(self.stopped_after_seconds, interval)
        if lag > 0 and unmoved >= stopped_after:
            return LagStatus.STOPPED, (
                f"committed offset {committed} has not moved for {unmoved:.0f}s (stopped after {stopped_after:g}s) "
                f"while lag is {lag}"
            )
        if lag == 0:
            return LagStatus.OK, "caught up"
        if len(seen) < 2:
            return LagStatus.OK, f"lag {lag}: not enough observations yet to judge (1 of at least 2)"
        if any(s.lag == 0 for s in seen):
            return LagStatus.OK, f"lag {lag}, but it was 0 within the last {len(seen)} observations"
        offsets = [-1 if s.committed is None else s.committed for s in seen]
        back = next(((a, b) for a, b in zip(offsets, offsets[1:], strict=False) if b < a), None)
        if back is not None:
            return LagStatus.WARNING, f"committed offset went back from {back[0]} to {back[1]} (a reset or a replay)"
        if len(set(offsets)) == 1:
            if unmoved > interval:
                return LagStatus.STALLED, (
                    f"committed offset {committed} unchanged over the last {len(seen)} observations "
                    f"({unmoved:.0f}s) while lag is {lag}"
                )
            return LagStatus.OK, (
                f"committed offset unchanged for {unmoved:.0f}s, within the group's commit interval of {interval:g}s"
            )
        lags = [s.lag for s in seen]
        if all(b > a for a, b in zip(lags, lags[1:], strict=False)):
            return LagStatus.WARNING, (
                f"lag grew at each of the last {len(seen)} observations ({lags[0]} to {lags[-1]}) while commits "
                "move: the consumer is slower than its producers"
            )
        return LagStatus.OK, f"keeping up (lag {lag}, commits moving)"


def _group_status(group: str, partitions: list[PartitionStatus]) -> GroupStatus:
    """A group's verdict: its worst partition's, with that partition's reason."""
    status = LagStatus.worst(p.status for p in partitions)
    # The partitions that make the verdict, the largest lag first; caught-up ones say nothing.
    worst = sorted((p for p in partitions if p.status is status and p.lag > 0), key=lambda p: -p.lag)
    worst = worst or [p for p in partitions if p.status is status]
    if not partitions:
        reason = "no partitions to read"
    elif status is LagStatus.OK and all(p.lag == 0 for p in partitions):
        reason = f"caught up on all {len(partitions)} partitions"
    else:
        first = worst[0]
        more = f" (and {len(worst) - 1} more partitions)" if len(worst) > 1 else ""
        reason = f"{first.topic}[{first.partition}]: {first.reason}{more}"
    ages = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
    return GroupStatus(group, status, partitions, sum(p.lag for p in partitions), max(ages, default=None), reason)
