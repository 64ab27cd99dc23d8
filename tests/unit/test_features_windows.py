"""Per-key event-time windows: counting, means, expiry, late events, serialization."""

from __future__ import annotations

import json

import pytest

from streamml.windows import WindowSpec, WindowState, window_features

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


def test_added_source_positions_are_remembered_per_partition() -> None:
    state = WindowState()
    state.add(T0, {"loan": 1.0}, SPEC, (1, 7))
    state.add(T0 + 1, {"loan": 1.0}, SPEC, (1, 3))  # out of offset order: the highest stays
    assert state.applied == {1: 7}
    assert state.contains(1, 7) and state.contains(1, 0) and not state.contains(1, 8)
    # The same key arriving on another partition (the topic was repartitioned) is not skipped.
    assert not state.contains(2, 0)
    state.add(T0 + 2, {"loan": 1.0}, SPEC, (2, 0))
    assert state.applied == {1: 7, 2: 0}


def test_a_too_late_event_records_no_position() -> None:
    state = WindowState()
    state.add(T0 + 1_000_000, {"loan": 1.0}, SPEC, (0, 1))
    assert not state.add(T0, {"loan": 1.0}, SPEC, (0, 2))
    assert state.applied == {0: 1}


def test_remove_undoes_add() -> None:
    state = WindowState()
    state.add(T0, {"loan": 1.0}, SPEC, (0, 0))
    before = state.copy()
    state.add(T0 + 1000, {"loan": 4.0}, SPEC)
    state.add(T0 + 10_000, {"loan": None}, SPEC)
    assert state.remove(T0 + 10_000, {"loan": None}, SPEC) and state.remove(T0 + 1000, {"loan": 4.0}, SPEC)
    # Same buckets and positions; the newest bucket seen stays (it only bounds expiry).
    assert (state.buckets, state.applied) == (before.buckets, before.applied)
    assert not state.remove(T0 + 500_000, {"loan": 1.0}, SPEC)  # no such bucket: nothing to take out
    assert (state.buckets, state.applied) == (before.buckets, before.applied)


def test_applied_positions_survive_dump_load_and_copy() -> None:
    state = WindowState()
    state.add(T0, {"loan": 1.0}, SPEC, (3, 41))
    state.add(T0 + 1, {"loan": 1.0}, SPEC, (0, 9))
    dumped = json.loads(state.encode(SPEC))
    assert dumped["applied"] == {"0": 9, "3": 41} and dumped == state.dump(SPEC)
    loaded = WindowState.load(dumped, SPEC)
    assert loaded.applied == {0: 9, 3: 41} and loaded == state
    copied = state.copy()
    copied.add(T0 + 2, {"loan": 1.0}, SPEC, (3, 42))
    assert state.applied == {0: 9, 3: 41}  # the copy is independent


def test_state_in_the_first_format_still_loads() -> None:
    # Format 1 (changelogs written before format 2): buckets and applied offsets as lists of rows.
    old = {"v": 1, "bucket_ms": 5000, "fields": ["loan"], "latest": T0 // 5000,
           "buckets": [[T0 // 5000, 2.0, 30.0, 2.0]], "applied": [[0, 9], [3, 41]],
           "recent": [[3, 41, T0, 15.0, 2.0, 15.0]]}
    loaded = WindowState.load(old, SPEC)
    assert loaded.applied == {0: 9, 3: 41} and loaded.buckets == {T0 // 5000: [2.0, 30.0, 2.0]}
    assert loaded.first_features(3, 41, SPEC) == {"key_events_60s": 2.0, "loan_mean_60s": 15.0}
    assert WindowState.load(json.loads(loaded.encode(SPEC)), SPEC) == loaded  # and goes on in format 2


def test_state_dumped_before_applied_positions_existed_still_loads() -> None:
    old = {"v": 1, "bucket_ms": 5000, "fields": ["loan"], "latest": T0 // 5000,
           "buckets": [[T0 // 5000, 2.0, 30.0, 2.0]]}
    loaded = WindowState.load(old, SPEC)
    assert loaded.applied == {} and not loaded.contains(0, 0)
    assert window_features(loaded, T0, {"loan": 0.0}, SPEC) == {"key_events_60s": 3.0, "loan_mean_60s": 10.0}
    assert "applied" not in WindowState().dump(SPEC)  # a state with no positions dumps as before


def test_malformed_applied_positions_raise_value_error() -> None:
    raw = {"bucket_ms": 5000, "fields": ["loan"], "latest": None, "buckets": [], "applied": [[1]]}
    with pytest.raises(ValueError):
        WindowState.load(raw, SPEC)
