"""The demo's drift checks: detected soon after the shift, never before, and skipped when the run is too short."""

from __future__ import annotations

from streamml.config import Settings
from streamml_cli.orchestration.checks import DRIFTED_FIELD
from streamml_cli.orchestration.checks import drift_checks as _drift_checks
from streamml_cli.orchestration.demo import DemoOptions
from streamml_cli.orchestration.monitor import AlertSeen, ModelVersionSeen, PipelineSnapshot

SETTINGS = Settings()  # reference 1,000 events, windows of 500
OPTIONS = DemoOptions(events=20_000)


def _snapshot(*alerts: tuple[str, int], rise_at: int | None = 9_800) -> PipelineSnapshot:
    snapshot = PipelineSnapshot(produced=20_000, features=19_600, quarantined=400)  # 9,800 valid before the shift
    snapshot.alerts = [AlertSeen(field, "psi", 3.0, 1, observed) for field, observed in alerts]
    snapshot.versions = [ModelVersionSeen(1, 0, 19_600, 0.9, 0.9, 1 if rise_at else 0, rise_at)]
    return snapshot


def test_a_shift_caught_in_the_window_after_it_passes() -> None:
    checks = _drift_checks(_snapshot((DRIFTED_FIELD, 10_000), ("label", 10_000)), SETTINGS, OPTIONS)
    assert checks and all(checks.values()), checks


def test_an_alert_well_before_the_shift_fails() -> None:
    checks = _drift_checks(_snapshot(("age", 4_000), (DRIFTED_FIELD, 10_000)), SETTINGS, OPTIONS)
    assert checks["no drift alert before the shift"] is False


def test_a_shift_caught_late_or_never_fails() -> None:
    late = _drift_checks(_snapshot((DRIFTED_FIELD, 12_000)), SETTINGS, OPTIONS)
    never = _drift_checks(_snapshot(), SETTINGS, OPTIONS)
    name = f"the drift in {DRIFTED_FIELD} was detected within two windows"
    assert late[name] is False and never[name] is False


def test_the_learner_must_see_its_error_rate_rise_at_the_drift() -> None:
    name = "the learner's error rate rose at the concept drift, not before"
    assert _drift_checks(_snapshot((DRIFTED_FIELD, 10_000), rise_at=None), SETTINGS, OPTIONS)[name] is False
    assert _drift_checks(_snapshot((DRIFTED_FIELD, 10_000), rise_at=3_000), SETTINGS, OPTIONS)[name] is False


def test_no_drift_checks_for_a_run_too_short_or_with_monitoring_off() -> None:
    assert _drift_checks(_snapshot(), SETTINGS, DemoOptions(events=2_000)) == {}
    assert _drift_checks(_snapshot(), Settings(drift_window_events=0), OPTIONS) == {}


# -- the watchers' bound and the facts about swaps -------------------------------------------------------------

def test_a_call_that_never_returns_is_given_up_within_its_bound_and_the_next_fails_at_once() -> None:
    import threading
    import time

    import pytest

    from streamml_cli.orchestration.bounded import BoundedCalls, CallStalled

    release = threading.Event()
    calls = BoundedCalls("reading the pipeline's topics")
    started = time.monotonic()
    with pytest.raises(CallStalled, match="did not return within 0.2s"):
        calls.call("a read", lambda: release.wait(30), 0.2)
    assert time.monotonic() - started < 5
    assert calls.stalled is not None and calls.stalled.startswith("a read")
    with pytest.raises(CallStalled, match="still waiting for a read"):
        calls.call("another read", lambda: True, 0.2)  # no second stuck thread
    release.set()
    assert calls.call("another read", lambda: 7, 5) == 7  # once the stuck call returned, calls go on
    with pytest.raises(ZeroDivisionError):
        calls.call("a failing read", lambda: 1 // 0, 5)


def test_every_version_after_ready_must_have_been_served_except_withheld_ones() -> None:
    from streamml_cli.orchestration.checks import swap_checks as _swap_checks

    snapshot = PipelineSnapshot()
    snapshot.versions = [ModelVersionSeen(v, 0, v, 0.9, 0.9, withheld=v == 5) for v in range(1, 6)]
    scorer = "the scorer swapped to every version published after it became ready"
    sdk = "the SDK subscriber swapped to every version published after it became ready"
    good = _swap_checks(snapshot, scorer_served=[2, 3, 4], sdk_swapped=[1, 2, 3, 4])
    assert good[scorer] and good[sdk]  # ready at v2 (v1 came before it); v5 was withheld
    missed = _swap_checks(snapshot, scorer_served=[2, 4], sdk_swapped=[])
    assert missed[scorer] is False and missed[sdk] is False  # v3 skipped; never ready


def test_the_learner_must_have_learned_every_valid_event() -> None:
    from streamml_cli.orchestration.checks import pipeline_checks as _checks

    class Subscriber:
        version = 1

    snapshot = PipelineSnapshot(produced=100, features=98, quarantined=2, predictions=98)
    name = "the learner learned every valid event"
    snapshot.versions = [ModelVersionSeen(1, 0, 98, 0.9, 0.9)]
    assert _checks(snapshot, [], {}, Subscriber(), 1, DemoOptions(events=100), SETTINGS)[name] is True
    snapshot.versions = [ModelVersionSeen(1, 0, 97, 0.9, 0.9)]
    assert _checks(snapshot, [], {}, Subscriber(), 1, DemoOptions(events=100), SETTINGS)[name] is False
    unread = _checks(snapshot, None, {}, Subscriber(), 1, DemoOptions(events=100), SETTINGS)
    assert unread["lag is back to zero"] is False  # a lag that could not be read is not zero


def test_what_the_demo_waits_for_is_said_in_words_and_the_default_timeout_grows_with_the_run() -> None:
    from streamml_cli.orchestration.demo import _waiting_for, default_timeout

    assert "the producer" in _waiting_for(False, PipelineSnapshot(produced=10), 100)
    assert "the processor (50 of 100" in _waiting_for(True, PipelineSnapshot(produced=100, features=50), 100)
    scoring = PipelineSnapshot(produced=100, features=98, quarantined=2, predictions=90)
    assert "the scorer (90 of 98" in _waiting_for(True, scoring, 100)
    assert _waiting_for(True, PipelineSnapshot(produced=100, features=98, quarantined=2, predictions=98), 100) == ""
    assert default_timeout(20_000, 1000.0) == 120 + 100 + 20
    assert default_timeout(4_000, None) < default_timeout(20_000, None)
