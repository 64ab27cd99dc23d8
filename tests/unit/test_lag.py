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
