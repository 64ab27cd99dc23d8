"""benchmarks.training_modes at a tiny scale: the experiment's structure, and the drift's lesson."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import training_modes
from benchmarks.training_modes import GATED, MODES, PHASES, Schedule, run, run_seed

N = 4_000  # drift at 2,000; seed 5 has both classes in its first 500 events (seed 2 has not)
SMALL = Schedule(warmup=500, publish_every=500, retrain_every=1_000, window=1_000, gate_events=100, during=300,
                 recovery_window=200)


@pytest.fixture(scope="module")
def experiment() -> tuple[list[training_modes.SeedResult], dict]:
    return run(N, [5], SMALL)


def test_every_mode_has_an_accuracy_per_phase(experiment) -> None:
    [result], summary = experiment
    assert result.events == N and result.quarantined == 0 and result.drift_position == N // 2
    assert list(summary) == list(MODES)
    for mode in MODES:
        assert set(result.accuracy[mode]) == set(PHASES)
        for phase in PHASES:
            assert 0.0 <= summary[mode][phase] <= 1.0, (mode, phase)


def test_the_online_model_recovers_where_the_static_one_cannot(experiment) -> None:
    [result], _ = experiment
    accuracy, recovery = result.accuracy, result.recovery
    assert accuracy["online"]["after"] > accuracy["batch_once"]["after"] + 0.2
    assert accuracy["batch_once"]["after"] < 0.65  # the old concept is useless after the drift
    assert recovery["online"] is not None and recovery["batch_once"] is None
    # Before the drift the phases agree, since no mode can beat a concept it already has.
    assert accuracy["online"]["before"] == pytest.approx(accuracy["batch_once"]["before"], abs=0.02)


def test_every_candidate_is_promoted_or_refused(experiment) -> None:
    [result], _ = experiment
    online = math.ceil((N - SMALL.warmup) / SMALL.publish_every)
    batch = math.ceil((N - SMALL.warmup) / SMALL.retrain_every)
    expected = {"gated_online": online, "gated_mixed": online + batch}
    for mode in GATED:
        promoted, refused = result.gate_counts(mode)
        assert promoted + refused == len(result.decisions[mode]) == expected[mode]
        assert promoted >= 1  # the first candidate faces no champion
    kinds = {d["kind"] for d in result.decisions["gated_mixed"]}
    assert kinds == {"online", "batch"}


def test_a_gate_decision_comes_after_its_held_back_events(experiment) -> None:
    [result], _ = experiment
    first, *rest = result.decisions["gated_online"]
    assert first["decided_at"] == first["at"] == SMALL.warmup and first["champion"] is None
    assert all(d["decided_at"] == d["at"] + SMALL.gate_events for d in rest)


def test_a_seed_gives_the_same_numbers_again(experiment) -> None:
    [result], _ = experiment
    again = run_seed(N, 5, SMALL)
    assert (again.accuracy, again.recovery) == (result.accuracy, result.recovery)
    assert [d["promoted"] for d in again.decisions["gated_mixed"]] == [
        d["promoted"] for d in result.decisions["gated_mixed"]
    ]


def test_the_table_and_the_json(experiment) -> None:
    results, summary = experiment
    table = training_modes.format_table(summary, SMALL).splitlines()
    assert len(table) == 2 + len(MODES)
    assert all(line.count("|") == table[0].count("|") for line in table)
    document = training_modes.to_json(results, summary, SMALL, command="test", wall_seconds=1.0)
    assert json.loads(json.dumps(document))["median"]["online"]["after"] == summary["online"]["after"]


def test_recovery_is_measured_on_a_trailing_window() -> None:
    schedule = Schedule(warmup=1, publish_every=10, retrain_every=10, gate_events=1, recovery_window=4,
                        recovery_level=0.75)
    hits = [True] * 10 + [False] * 5 + [True] * 5  # events 1..20, drift at 11
    assert training_modes._recovery(hits, 11, schedule) == 8  # events 15..18: 3 of the last 4 right
    assert training_modes._recovery([True] * 10 + [False] * 10, 11, schedule) is None


def test_a_schedule_that_cannot_decide_in_time_is_refused() -> None:
    with pytest.raises(ValueError, match="gate_events"):
        Schedule(publish_every=100, gate_events=100)
