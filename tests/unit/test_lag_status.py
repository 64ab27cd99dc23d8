"""The lag verdict (streamml.lag_status): every rule on synthetic observations, no broker."""

from __future__ import annotations

import pytest

from streamml.errors import ConfigError
from streamml.lag import GroupLag, PartitionLag
from streamml.lag_status import GroupStatus, LagEvaluator, LagStatus

G, T = "ns.streamml.scorer", "ns.features.v1"


def report(committed: int | None, log_end: int, *, lag_seconds: float | None = None, note: str = "") -> list[GroupLag]:
    """One group reading one partition at ``committed`` of a log ending at ``log_end``."""
    lag = max(log_end - (committed or 0), 0)
    row = PartitionLag(G, T, 0, committed, log_end, lag, 0, 0.0 if lag == 0 else lag_seconds, note)
    return [GroupLag(G, [row])]


def run(observations: list[tuple[float, int | None, int]], **kwargs: object) -> GroupStatus:
    """Feed ``(at, committed, log_end)`` observations; return the verdict after the last one."""
    evaluator = LagEvaluator(**kwargs)  # type: ignore[arg-type]
    statuses: list[GroupStatus] = []
    for at, committed, end in observations:
        statuses = evaluator.observe(report(committed, end), at)
    [status] = statuses
    return status


def test_statuses_are_ordered_by_severity() -> None:
    assert [s.severity for s in LagStatus] == [0, 1, 2, 3, 4]
    assert LagStatus.worst([LagStatus.WARNING, LagStatus.ERROR, LagStatus.OK]) is LagStatus.ERROR
    assert LagStatus.worst([]) is LagStatus.OK
    assert LagStatus("STALLED") is LagStatus.STALLED and LagStatus.STOPPED == "STOPPED"


@pytest.mark.parametrize(
    ("observations", "status", "reason"),
    [
        # Lag 0 now: OK, whatever came before.
        ([(0, 5, 10), (1, 5, 10), (2, 10, 10)], LagStatus.OK, "caught up"),
        # Lag 0 at any observation of the window: OK (Burrow's first rule).
        ([(0, 10, 10), (1, 10, 12), (2, 10, 15)], LagStatus.OK, "it was 0 within the last 3"),
        # One observation: the lag alone, which is not enough for a verdict.
        ([(0, 5, 10)], LagStatus.OK, "not enough observations"),
        # Same committed offset across the window, lag > 0 throughout: STALLED.
        ([(0, 5, 10), (1, 5, 12), (2, 5, 12)], LagStatus.STALLED, "unchanged over the last 3 observations"),
        # Commits move, the lag grows at every step: WARNING.
        ([(0, 5, 10), (1, 6, 13), (2, 7, 16)], LagStatus.WARNING, "lag grew at each of the last 3"),
        # Commits move and the lag goes up and down: keeping up, OK.
        ([(0, 5, 10), (1, 6, 13), (2, 10, 14), (3, 11, 17)], LagStatus.OK, "keeping up"),
        # Commits move, the lag holds still: not growing, OK.
        ([(0, 5, 10), (1, 6, 11), (2, 7, 12)], LagStatus.OK, "keeping up"),
        # The committed offset went back (an offset reset): WARNING.
        ([(0, 8, 10), (1, 2, 11), (2, 3, 12)], LagStatus.WARNING, "went back from 8 to 2"),
        # No committed offset while records wait: ERROR at once.
        ([(0, None, 10)], LagStatus.ERROR, "no committed offset while 10 records wait"),
        # No committed offset and nothing to read: OK.
        ([(0, None, 0), (1, None, 0)], LagStatus.OK, "caught up"),
    ],
)
def test_rules(observations: list[tuple[float, int | None, int]], status: LagStatus, reason: str) -> None:
    verdict = run(observations, window=3)
    assert verdict.status is status, verdict
    assert reason in verdict.reason, verdict


def test_only_the_window_counts() -> None:
    # Lag 0 at the first observation, then three more with lag > 0 and no commit: the 0 left the window.
    verdict = run([(0, 10, 10), (1, 10, 12), (2, 10, 13), (3, 10, 14)], window=3)
    assert verdict.status is LagStatus.STALLED


def test_stopped_after_no_commit_for_the_configured_time_with_lag() -> None:
    observations: list[tuple[float, int | None, int]] = [(0, 5, 10), (5, 5, 10), (9.9, 5, 10)]
    assert run(observations, window=10, stopped_after_seconds=10).status is LagStatus.STALLED
    verdict = run([*observations, (10, 5, 10)], window=10, stopped_after_seconds=10)
    assert verdict.status is LagStatus.STOPPED
    assert "has not moved for 10s" in verdict.reason and "lag is 5" in verdict.reason


def test_the_stopped_clock_counts_beyond_the_window() -> None:
    # A window of 2 observations spans 1 s; the offset has not moved for 30 s.
    observations: list[tuple[float, int | None, int]] = [(float(t), 5, 10) for t in range(31)]
    assert run(observations, window=2, stopped_after_seconds=30).status is LagStatus.STOPPED


def test_an_idle_consumer_is_not_stopped_by_the_first_new_record() -> None:
    # Caught up with the same committed offset for a minute, then one record arrives.
    observations: list[tuple[float, int | None, int]] = [(float(t), 10, 10) for t in range(0, 60, 10)]
    verdict = run([*observations, (60, 10, 11)], window=10, stopped_after_seconds=30)
    assert verdict.status is LagStatus.OK


def test_a_moving_offset_restarts_the_stopped_clock() -> None:
    verdict = run([(0, 5, 10), (20, 5, 10), (25, 6, 12), (40, 6, 12)], window=2, stopped_after_seconds=30)
    assert verdict.status is LagStatus.STALLED  # unmoved 15 s since 6 was first seen: not yet stopped


def test_a_group_between_two_commits_is_not_stalled() -> None:
    # The learner stores offsets only when it publishes: an unmoving offset within its interval is fine.
    observations: list[tuple[float, int | None, int]] = [(0, 5, 10), (2, 5, 12), (4, 5, 14)]
    verdict = run(observations, window=3, commit_intervals={G: 35.0})
    assert verdict.status is LagStatus.OK and "within the group's commit interval of 35s" in verdict.reason
    later = run([*observations, (36, 5, 20)], window=3, commit_intervals={G: 35.0})
    assert later.status is LagStatus.STALLED
    # STOPPED waits for the longer of the two.
    quick = {"window": 3, "stopped_after_seconds": 10, "commit_intervals": {G: 35.0}}
    assert run([*observations, (20, 5, 20)], **quick).status is LagStatus.OK
    assert run([*observations, (35, 5, 20)], **quick).status is LagStatus.STOPPED


def test_unknown_lag_is_error_never_zero_and_history_survives_it() -> None:
    evaluator = LagEvaluator(window=3)
    evaluator.observe(report(5, 10), 0)
    [unknown] = evaluator.observe([GroupLag.unknown(G, "no Kafka broker answered")], 1)
    assert unknown.status is LagStatus.ERROR and unknown.total_lag is None
    assert unknown.reason == "lag unknown: no Kafka broker answered"
    [back] = evaluator.observe(report(5, 12), 2)
    assert back.status is LagStatus.STALLED  # both known observations are in the window


def test_group_is_its_worst_partition_with_totals() -> None:
    rows = [
        PartitionLag(G, T, 0, 10, 10, 0, 0, 0.0),
        PartitionLag(G, T, 1, None, 7, 7, 0, 3.5),
        PartitionLag(G, T, 2, 4, 9, 5, 0, 12.0),
    ]
    [status] = LagEvaluator().observe([GroupLag(G, rows)], 0)
    assert status.status is LagStatus.ERROR
    assert status.total_lag == 12 and status.max_lag_seconds == 12.0
    assert status.reason == f"{T}[1]: no committed offset while 7 records wait"
    assert [p.status for p in status.partitions] == [LagStatus.OK, LagStatus.ERROR, LagStatus.OK]
    assert status.as_dict()["status"] == "ERROR"
    assert status.as_dict()["partitions"][1]["status"] == "ERROR"  # type: ignore[index]


def test_a_caught_up_group_says_so() -> None:
    [status] = LagEvaluator().observe(report(10, 10), 0)
    assert status.status is LagStatus.OK and status.reason == "caught up on all 1 partitions"
    assert status.total_lag == 0 and status.max_lag_seconds == 0.0


def test_a_clamped_lag_says_so_in_the_reason() -> None:
    [status] = LagEvaluator().observe(report(10, 10, note="committed offset 12 is past the log end 10"), 0)
    assert "past the log end" in status.partitions[0].reason


def test_partitions_a_group_no_longer_reads_are_forgotten() -> None:
    evaluator = LagEvaluator(window=3)
    evaluator.observe(report(5, 10), 0)
    evaluator.observe([GroupLag(G, [])], 1)
    [status] = evaluator.observe(report(5, 10), 2)
    assert "not enough observations" in status.reason


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"window": 1}, "at least 2"), ({"stopped_after_seconds": 0}, "more than 0")]
)
def test_bad_parameters_are_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LagEvaluator(**kwargs)  # type: ignore[arg-type]
