"""PublishPolicy: every N learned events, or T seconds with something new."""

from __future__ import annotations

import pytest

from model_publisher.policy import PublishPolicy
from streamml.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_due_after_n_learned_events() -> None:
    policy = PublishPolicy(3, 60, clock=FakeClock())
    policy.learned(2)
    assert not policy.due()
    policy.learned()
    assert policy.due()
    policy.published()
    assert not policy.due() and policy.pending == 0


def test_due_after_t_seconds_only_with_something_learned() -> None:
    clock = FakeClock()
    policy = PublishPolicy(1000, 30, clock=clock)
    clock.now += 31
    assert not policy.due()  # idle stream: nothing new, nothing to publish
    policy.learned()
    assert policy.due()
    policy.published()
    policy.learned()
    clock.now += 29.9
    assert not policy.due()
    clock.now += 0.1
    assert policy.due()


@pytest.mark.parametrize(("events", "seconds"), [(0, 1.0), (1, 0.0), (5, -1.0)])
def test_invalid_policy_is_a_config_error(events: int, seconds: float) -> None:
    with pytest.raises(ConfigError):
        PublishPolicy(events, seconds)
