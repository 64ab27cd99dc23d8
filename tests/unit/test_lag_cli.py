"""``streamml lag``'s loops without a broker: the verdict, ``--fail-on`` and an unreadable broker under ``--watch``."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from streamml.lag import GroupLag, PartitionLag
from streamml.lag_status import LagEvaluator, LagStatus
from streamml_cli.lag import FAIL_ON_EXIT, _single, _watch

G, T = "ns.streamml.scorer", "ns.features.v1"


def reads(*reports: list[GroupLag]) -> Callable[[], list[GroupLag]]:
    """A reader returning ``reports`` in turn, then the last one again."""
    queue = list(reports)
    return lambda: queue.pop(0) if len(queue) > 1 else queue[0]


def lagging(committed: int, end: int) -> list[GroupLag]:
    return [GroupLag(G, [PartitionLag(G, T, 0, committed, end, end - committed, 0, 3.0)])]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the sampling intervals, not a condition


def test_a_single_run_judges_over_its_samples(capsys: pytest.CaptureFixture[str]) -> None:
    read = reads(lagging(5, 10), lagging(6, 13), lagging(7, 16))
    code = _single(LagEvaluator(window=3), read, 3, 0.0, True, LagStatus.WARNING)
    assert code == FAIL_ON_EXIT
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "WARNING" and payload["observations"] == 3 and payload["total_lag"] == 9
    assert payload["groups"][0]["partitions"][0]["status"] == "WARNING"


def test_below_the_fail_on_status_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    read = reads(lagging(5, 10), lagging(6, 13), lagging(7, 16))
    assert _single(LagEvaluator(window=3), read, 3, 0.0, False, LagStatus.STALLED) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "lag grew" in out and "status over 3 observations" in out


def test_watch_shows_an_unreadable_broker_as_unknown_and_error(capsys: pytest.CaptureFixture[str]) -> None:
    read = reads(lagging(5, 10), [GroupLag.unknown(G, "no Kafka broker answered")])
    assert _watch(LagEvaluator(), read, 0.1, True, LagStatus.ERROR) == FAIL_ON_EXIT
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["status"] == "OK" and first["total_lag"] == 5
    assert second["status"] == "ERROR" and second["total_lag"] is None  # unknown, never 0
    assert second["groups"][0]["reason"] == "lag unknown: no Kafka broker answered"


def test_watch_table_says_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    read = reads([GroupLag.unknown(G, "no Kafka broker answered")])
    assert _watch(LagEvaluator(), read, 0.1, False, LagStatus.ERROR) == FAIL_ON_EXIT
    out = capsys.readouterr().out
    assert "unknown" in out and "ERROR" in out


def test_ctrl_c_ends_watch_with_0() -> None:
    def interrupted() -> list[GroupLag]:
        raise KeyboardInterrupt

    assert _watch(LagEvaluator(), interrupted, 0.1, True, None) == 0
