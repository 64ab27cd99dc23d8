"""The demo's drift checks: detected soon after the shift, never before, and skipped when the run is too short."""

from __future__ import annotations

from streamml.config import Settings
from streamml_cli.orchestration.demo import DRIFTED_FIELD, DemoOptions, _drift_checks
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
