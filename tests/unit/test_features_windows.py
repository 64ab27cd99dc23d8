"""Per-key event-time windows: counting, means, expiry, late events, serialization."""

from __future__ import annotations

import json

import pytest

from stream_processors.windows import WindowSpec, WindowState, window_features

SPEC = WindowSpec(seconds=60, fields=("loan",), buckets_per_window=12)  # 5 s buckets
T0 = 1_700_000_000_000 - (1_700_000_000_000 % 5000)  # a bucket boundary


def observe(state: WindowState, t: int, loan: float | None) -> dict[str, float]:
    features = window_features(state, t, {"loan": loan}, SPEC)
    state.add(t, {"loan": loan}, SPEC)
    return features


def test_names_follow_the_window_length() -> None:
    assert SPEC.count_feature == "key_events_60s" and SPEC.mean_feature("loan") == "loan_mean_60s"
    assert WindowSpec(seconds=2.5).count_feature == "key_events_2.5s"


def test_counts_and_means_include_the_event_itself() -> None:
    state = WindowState()
    assert observe(state, T0, 10.0) == {"key_events_60s": 1.0, "loan_mean_60s": 10.0}
    assert observe(state, T0 + 1000, 20.0) == {"key_events_60s": 2.0, "loan_mean_60s": 15.0}
    assert observe(state, T0 + 30_000, 60.0) == {"key_events_60s": 3.0, "loan_mean_60s": 30.0}


def test_reading_does_not_change_the_state() -> None:
    state = WindowState()
    state.add(T0, {"loan": 1.0}, SPEC)
    before = state.dump(SPEC)
    window_features(state, T0 + 1, {"loan": 5.0}, SPEC)
    assert state.dump(SPEC) == before


def test_events_older_than_the_window_are_not_counted() -> None:
    state = WindowState()
    observe(state, T0, 100.0)
    observe(state, T0 + 10_000, 200.0)
    # 60 s after the first event's bucket, only the second is still in the window.
    assert observe(state, T0 + 60_000, 300.0) == {"key_events_60s": 2.0, "loan_mean_60s": 250.0}
    assert observe(state, T0 + 200_000, 1.0) == {"key_events_60s": 1.0, "loan_mean_60s": 1.0}


def test_expired_buckets_are_dropped_so_state_stays_small() -> None:
    state = WindowState()
    for i in range(10_000):
        state.add(T0 + i * 1000, {"loan": 1.0}, SPEC)
    assert len(state.buckets) <= SPEC.retained_buckets + 1
    assert len(json.dumps(state.dump(SPEC))) < 2000


def test_late_event_is_placed_by_its_event_time() -> None:
    state = WindowState()
    observe(state, T0 + 100_000, 1.0)
    # Arrives after the event at +100 s but happened at +30 s: its window
    # [-25 s, +30 s] does not contain the later event.
    assert observe(state, T0 + 30_000, 3.0) == {"key_events_60s": 1.0, "loan_mean_60s": 3.0}
    # ... and it is counted for events whose window covers it.
    assert observe(state, T0 + 80_000, 5.0)["key_events_60s"] == 2.0
    # The window of +100 s (buckets from +45 s) holds +80 s and +100 s, not +30 s.
    assert observe(state, T0 + 100_001, 0.0)["key_events_60s"] == 3.0


def test_too_late_event_gets_features_but_leaves_the_state_alone() -> None:
    state = WindowState()
    observe(state, T0 + 1_000_000, 1.0)
    before = state.dump(SPEC)
    assert observe(state, T0, 7.0) == {"key_events_60s": 1.0, "loan_mean_60s": 7.0}
    assert state.dump(SPEC) == before


def test_missing_values_are_left_out_of_the_mean() -> None:
    state = WindowState()
    observe(state, T0, 10.0)
    assert observe(state, T0 + 1, None) == {"key_events_60s": 2.0, "loan_mean_60s": 10.0}
    assert observe(WindowState(), T0, None) == {"key_events_60s": 1.0}


def test_keys_are_isolated_by_keeping_one_state_each() -> None:
    states = {"a": WindowState(), "b": WindowState()}
    observe(states["a"], T0, 1.0)
    observe(states["a"], T0 + 1, 1.0)
    assert observe(states["b"], T0 + 2, 9.0) == {"key_events_60s": 1.0, "loan_mean_60s": 9.0}


def test_dump_load_round_trip_through_json() -> None:
    state = WindowState()
    for i in range(7):
        state.add(T0 + i * 7000, {"loan": float(i)}, SPEC)
    loaded = WindowState.load(json.loads(json.dumps(state.dump(SPEC))), SPEC)
    assert loaded == state
    assert window_features(loaded, T0 + 50_000, {"loan": 1.0}, SPEC) == window_features(
        state, T0 + 50_000, {"loan": 1.0}, SPEC
    )


def test_state_from_another_configuration_is_discarded() -> None:
    state = WindowState()
    state.add(T0, {"loan": 1.0}, SPEC)
    other = WindowSpec(seconds=60, fields=("salary",), buckets_per_window=12)
    assert WindowState.load(state.dump(SPEC), other) == WindowState()
    assert WindowState.load(state.dump(SPEC), WindowSpec(seconds=30, fields=("loan",))) == WindowState()
    assert WindowState.load(None, SPEC) == WindowState()


@pytest.mark.parametrize("raw", [{}, {"bucket_ms": 5000, "fields": ["loan"], "latest": 1, "buckets": [[1, 2.0]]}, 42])
def test_malformed_state_raises_value_error(raw: object) -> None:
    with pytest.raises(ValueError):
        WindowState.load(raw, SPEC)
