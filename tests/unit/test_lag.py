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


class _NeverAnswers:
    """An admin client whose futures never complete (a request librdkafka never finishes)."""

    def list_consumer_groups(self, **kwargs: object) -> object:
        from concurrent.futures import Future

        return Future()

    def list_consumer_group_offsets(self, groups: list, **kwargs: object) -> dict:
        from concurrent.futures import Future

        return {g.group_id: Future() for g in groups}


def test_an_admin_request_that_never_answers_fails_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import streamml.cluster
    import streamml.lag
    from streamml.cluster import Cluster
    from streamml.config import Settings
    from streamml.errors import KafkaClientError

    monkeypatch.setattr(streamml.cluster, "ADMIN_GRACE", 0.05)
    monkeypatch.setattr(streamml.lag, "ADMIN_GRACE", 0.05)
    cluster = Cluster(Settings())
    cluster._admin = _NeverAnswers()  # type: ignore[assignment]
    started = time.monotonic()
    with pytest.raises(KafkaClientError, match="no answer within"):
        cluster.list_groups(timeout=0.1)
    with pytest.raises(KafkaClientError, match="committed offsets of group g: no answer within"):
        streamml.lag._committed(cluster, "g", timeout=0.1)
    assert time.monotonic() - started < 5  # bounded: the demo's monitor calls these every 2 s


@pytest.mark.parametrize(
    ("stamp_ms", "age", "note"),
    [
        (None, None, ""),  # no timestamp: the age is unknown, not 0
        (90_000, 10.0, ""),
        (100_000, 0.0, ""),
        (105_000, 0.0, "5.0s in the future"),  # producer clock ahead: clamped, and said
    ],
)
def test_record_age(stamp_ms: int | None, age: float | None, note: str) -> None:
    from streamml.lag_time import record_age

    got, said = record_age(stamp_ms, now=100.0)
    assert got == age
    assert note in said and bool(said) == bool(note)


def _fake_broker(monkeypatch: pytest.MonkeyPatch, committed: dict[tuple[str, int], int | None],
                 marks: dict[tuple[str, int], tuple[int, int]], stamps: dict[tuple[str, int], int | None]) -> None:
    """Answer consumer_lag's broker reads from tables: committed offsets, (start, end) marks, record timestamps."""
    import streamml.lag

    monkeypatch.setattr(streamml.lag, "_committed", lambda cluster, group, timeout: committed)
    monkeypatch.setattr(streamml.lag, "watermarks", lambda cluster, tps, timeout: {tp: marks[tp] for tp in tps})
    monkeypatch.setattr(
        streamml.lag, "timestamps_at",
        lambda cluster, wanted, timeout: {(tp, at): stamps[tp] for tp, ats in wanted.items() for at in ats},
    )


class _Counts:
    def partition_counts(self, names: object, timeout: float) -> dict[str, int]:
        return {"t": 4}


def test_lag_rows_in_records_and_time_never_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from streamml.lag import consumer_lag

    now_ms = int(time.time() * 1000)
    _fake_broker(
        monkeypatch,
        committed={("t", 0): 10, ("t", 1): 120, ("t", 2): 5, ("t", 3): None},
        marks={("t", 0): (0, 10), ("t", 1): (0, 100), ("t", 2): (40, 50), ("t", 3): (0, 7)},
        stamps={("t", 2): now_ms - 30_000, ("t", 3): None},
    )
    [group] = consumer_lag(_Counts(), ["g"], topics={"g": ["t"]})  # type: ignore[arg-type]
    rows = {row.partition: row for row in group.partitions}
    assert (rows[0].lag, rows[0].lag_seconds, rows[0].note) == (0, 0.0, "")  # caught up: 0 s, no read needed
    assert rows[1].lag == 0 and "past the log end 100" in rows[1].note and "clamped" in rows[1].note
    assert rows[2].lag == 10 and 29 < (rows[2].lag_seconds or 0) < 40  # counted from the log start, 40
    assert "records 5..39 were deleted" in rows[2].note
    assert rows[3].lag == 7 and rows[3].lag_seconds is None  # unreadable age: unknown, not 0
    assert group.known and group.total == 17


def test_an_unreadable_broker_gives_unknown_lag_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamml.lag
    from streamml.cluster import Cluster
    from streamml.config import Settings
    from streamml.errors import KafkaClientError

    def fail(*args: object, **kwargs: object) -> None:
        raise KafkaClientError("cannot list consumer groups: no answer within 15s")

    monkeypatch.setattr(streamml.lag, "pipeline_lag", fail)
    cluster = Cluster(Settings())
    report = streamml.lag.observe_lag(cluster)
    assert [g.group for g in report] == cluster.groups.all()
    assert all(not g.known and "no answer within 15s" in (g.error or "") for g in report)
    assert report[0].as_dict()["total_lag"] is None
    [only] = streamml.lag.observe_lag(cluster, "mine")
    assert only.group == "mine" and not only.known


def test_commit_intervals_follow_the_settings() -> None:
    from streamml.cluster import Cluster
    from streamml.config import Settings
    from streamml.lag import AUTO_COMMIT_SECONDS, commit_intervals

    settings = Settings(publish_every_seconds=12.0, processor_commit_interval_seconds=0.5)
    cluster = Cluster(settings)
    assert commit_intervals(cluster) == {
        cluster.groups.processor: 0.5,
        cluster.groups.scorer: AUTO_COMMIT_SECONDS,
        cluster.groups.learner: 12.0 + AUTO_COMMIT_SECONDS,
    }


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "unknown"), (0.0, "0s"), (12.34, "12.3s"), (245.0, "4m05s"), (7620.0, "2h07m")]
)
def test_lag_time_is_shown_readably(seconds: float | None, text: str) -> None:
    from streamml_cli.lag import format_age

    assert format_age(seconds) == text
