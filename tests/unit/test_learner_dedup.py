"""RecentIds: the learner's bounded memory of learned event ids."""

from __future__ import annotations

import pytest

from model_publisher.learning_loop import RecentIds
from streamml.config import load_settings
from streamml.errors import ConfigError


def test_an_id_is_a_duplicate_while_remembered() -> None:
    ids = RecentIds(3)
    assert [ids.seen_before(i) for i in ("a", "b", "a", "c", "b")] == [False, False, True, False, True]
    assert len(ids) == 3


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    ids = RecentIds(100)
    for i in range(10_000):
        assert not ids.seen_before(f"e{i}")
    assert len(ids) == 100
    assert ids.seen_before("e9999") and not ids.seen_before("e0")


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)


def test_settings() -> None:
    settings = load_settings(env={})
    assert (settings.learner_dedup_events, settings.processor_commit_interval_seconds) == (100_000, 0.5)
    with pytest.raises(ConfigError, match="learner_dedup_events"):
        load_settings(env={"STREAMML_LEARNER_DEDUP_EVENTS": "-1"})
    with pytest.raises(ConfigError, match="processor_commit_interval_seconds"):
        load_settings(env={"STREAMML_PROCESSOR_COMMIT_INTERVAL_SECONDS": "0"})
