"""The demo's checks: facts that hold for a healthy pipeline at any size and speed.

Each check is a sentence and a boolean computed from what the demo observed
(:class:`~streamml_cli.orchestration.monitor.PipelineSnapshot`, the final
lag, the components' exit codes, the versions the scorer and the SDK served).
None depends on timing luck: how many versions the scorer happened to predict
with, or whether v1 lived long enough to make a prediction, are figures in the
summary, not checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamml.config import Settings
from streamml.lag import GroupLag
from streamml_cli.orchestration.monitor import PipelineSnapshot

if TYPE_CHECKING:
    from streamml_cli.orchestration.demo import DemoOptions

__all__ = ["DRIFTED_FIELD", "drift_checks", "pipeline_checks", "swap_checks"]


def swap_checks(snapshot: PipelineSnapshot, scorer_served: list[int], sdk_swapped: list[int]) -> dict[str, bool]:
    """Every version published after a consumer became ready, and not withheld by the gate, was served by it.

    Facts at any size and speed: which version a consumer starts with depends
    on when it became ready, but from then on it follows the models topic and
    swaps to each acceptable version in turn. ``scorer_served`` comes from the
    scorer's ``serving`` log lines, ``sdk_swapped`` from the in-process SDK's
    swap callback.
    """

    def swapped_to_every_later(served: list[int]) -> bool:
        if not served:
            return False
        later = {v.version for v in snapshot.versions if not v.withheld and v.version > served[0]}
        return later <= set(served)

    return {
        "the scorer swapped to every version published after it became ready": swapped_to_every_later(scorer_served),
        "the SDK subscriber swapped to every version published after it became ready": swapped_to_every_later(
            sdk_swapped
        ),
    }


def pipeline_checks(
    snapshot: PipelineSnapshot,
    lag: list[GroupLag] | None,
    exit_codes: dict[str, int],
    subscriber: Any,
    final_version: int | None,
    options: DemoOptions,
    settings: Settings,
) -> dict[str, bool]:
    latest = snapshot.latest
    checks = {
        "every event is in features or dead letters": snapshot.features + snapshot.quarantined == snapshot.produced,
        "every feature vector was scored": snapshot.predictions == snapshot.features,
        # How many is timing: a learner whose time rule (--publish-every-seconds)
        # has not fired yet when a burst of events arrives learns the whole
        # burst into v1 and has nothing left for a final version. That the
        # last one learned every event is checked below.
        "a model version was published": len(snapshot.versions) >= 1,
        "versions increase": all(
            a.version < b.version for a, b in zip(snapshot.versions, snapshot.versions[1:], strict=False)
        ),
        # Facts of a healthy pipeline at any size and speed (how many versions the
        # scorer happened to use depends on timing: a fast run may score with one).
        # One scorer, no rollback in the demo: per partition, versions only rise.
        "every prediction names a published version": set(snapshot.versions_scored)
        <= {v.version for v in snapshot.versions},
        "the scorer never went back to an older version": snapshot.scorer_version_regressions == 0,
        # Whether v1 makes predictions is timing (v2 may arrive before the
        # scorer's group join hands it partitions): the summary reports the
        # delay from each publication to its first prediction instead of a check.
        "the SDK subscriber serves the champion (newest version not withheld)": final_version is not None
        and subscriber.version == final_version,
        # A lag that could not be read is not zero: the summary's notes say why.
        "lag is back to zero": lag is not None and sum(g.total for g in lag) == 0,
        "every component stopped cleanly": all(code == 0 for code in exit_codes.values()),
    }
    checks.update(drift_checks(snapshot, settings, options))
    if options.label_delay is not None:
        checks["every valid event was joined with its delayed label, once"] = snapshot.joined == snapshot.features
        checks["the learner learned every joined event"] = latest is not None and latest.n_learned == snapshot.joined
    else:
        # Every synthetic event carries its label: the last version learned them all.
        checks["the learner learned every valid event"] = latest is not None and latest.n_learned == snapshot.features
    if options.bad_fraction > 0:
        checks["bad events were quarantined with reasons"] = (
            snapshot.quarantined > 0
            and sum(snapshot.quarantine_rules.values()) == snapshot.quarantined
            and "unknown" not in snapshot.quarantine_rules
        )
    return checks


#: The field the synthetic stream drifts on at its midpoint (see producers.synthetic).
DRIFTED_FIELD = "car"


def drift_checks(snapshot: PipelineSnapshot, settings: Settings, options: DemoOptions) -> dict[str, bool]:
    """The synthetic stream's feature drift is caught, soon after it starts and never before.

    Positions are valid events seen by the (one) processor's monitor and
    labelled events learned by the learner. The shift starts at event
    ``events // 2``; the valid events before it are estimated from the run's
    valid share. Neither component reads the three partitions in exactly the
    order they were written (a backlog is fetched partition by partition), so
    "not before" allows a quarter of the pre-shift stream, and detection may
    take two windows past a tenth more.
    """
    window = settings.drift_window_events
    if window <= 0:
        return {}
    before_shift = options.events // 2 * (snapshot.features / max(snapshot.produced, 1))
    if before_shift < settings.drift_reference_events + window:
        return {}  # too short a run for a reference and a window before the shift
    first = snapshot.first_alert(DRIFTED_FIELD)
    too_early = [a for a in snapshot.alerts if a.rule == "psi" and a.observed < 0.75 * before_shift]
    latest = snapshot.latest
    rise_at = latest.error_rate_rise_at if latest else None
    return {
        f"the drift in {DRIFTED_FIELD} was detected within two windows": first is not None
        and first.observed <= 1.1 * before_shift + 2 * window,
        "no drift alert before the shift": not too_early,
        # Labelled events are the valid ones here: the concept drift sits at the same point.
        "the learner's error rate rose at the concept drift, not before": rise_at is not None
        and rise_at >= 0.75 * before_shift,
    }
