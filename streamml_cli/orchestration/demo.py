"""The end-to-end demo: the whole pipeline on one machine, bounded, checked.

It starts (unless given a cluster) the embedded broker, creates the topics,
runs the processor, learner and scorer as the same child processes a
deployment runs, streams a drifting synthetic event stream into them,
subscribes to the models topic in-process with the SDK, and watches the topics
until every event is accounted for. Then it stops everything it started, in
order, and returns a result the caller renders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.broker import EmbeddedBroker, free_port
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError, StreamMLError
from streamml.lag import GroupLag, pipeline_lag
from streamml_cli.orchestration.monitor import PipelineMonitor, PipelineSnapshot
from streamml_cli.orchestration.supervisor import Supervisor

__all__ = ["DemoOptions", "DemoResult", "DemoProgress", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """What ``streamml demo`` was asked for."""

    events: int = 20_000
    rate: float | None = 1000.0
    bad_fraction: float = 0.02
    seed: int = 42
    timeout: float = 600.0
    embedded: bool = True
    port: int | None = None
    #: Delayed-label mode: each label comes on labels.v1 up to this many seconds after its event.
    label_delay: float | None = None


@dataclass
class DemoProgress:
    """What the live view shows; refreshed about twice a second."""

    stage: str
    elapsed: float
    snapshot: PipelineSnapshot
    lag: list[GroupLag] = field(default_factory=list)
    sdk_version: int | None = None
    sdk_swaps: int = 0


@dataclass
class DemoResult:
    """The outcome: the final snapshot, lag after shutdown and the checks that passed or failed."""

    snapshot: PipelineSnapshot
    lag: list[GroupLag]
    sdk_version: int | None
    sdk_swaps: int
    sdk_refused: int
    elapsed: float
    bootstrap_servers: str
    #: Seconds from the producer's start to its exit (seen within one refresh of the loop).
    producing_seconds: float | None
    run_dir: Path
    exit_codes: dict[str, int]
    checks: dict[str, bool]

    @property
    def ok(self) -> bool:
        return all(self.checks.values())



def run_demo(
    settings: Settings,
    options: DemoOptions,
    on_progress: Callable[[DemoProgress], None] = lambda progress: None,
) -> DemoResult:
    """Run the demo to completion and return its result.

    Raises a :class:`~streamml.errors.StreamMLError` if the broker or a
    component fails, or if the pipeline has not drained within
    ``options.timeout`` seconds. Everything started is stopped in any case,
    including on KeyboardInterrupt.
    """
    started = time.monotonic()
    run_dir = settings.home / "demo" / time.strftime("%Y%m%d-%H%M%S")
    if settings.model_signing_key_file is None and not settings.development_mode:
        # The default path is the signed path: a key pair under the streamml
        # home on first run, which the components find there by default.
        from streamml_cli.keys import ensure_default_keys

        ensure_default_keys(settings.keys_dir)
    broker: EmbeddedBroker | None = None
    if options.embedded:
        broker = EmbeddedBroker(port=options.port or free_port(), home=run_dir)
        on_progress(DemoProgress("starting the embedded broker", 0.0, PipelineSnapshot()))
        broker.start()
        settings = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers)
    try:
        return _run(settings, options, run_dir, started, on_progress)
    finally:
        if broker is not None:
            broker.stop()


def _run(
    settings: Settings,
    options: DemoOptions,
    run_dir: Path,
    started: float,
    on_progress: Callable[[DemoProgress], None],
) -> DemoResult:
    from consumers import ModelSubscriber  # the SDK an application would use; deferred: keeps --help light

    if options.label_delay is not None:
        settings = settings.with_overrides(label_mode="delayed")  # the children inherit it
    cluster = Cluster(settings)
    cluster.wait_ready(timeout=30)
    cluster.create_topics(cluster.topics.specs(settings))
    deadline = started + options.timeout
    learner_group = cluster.groups.learner

    def progress(stage: str, snapshot: PipelineSnapshot, lag: list[GroupLag] | None = None) -> None:
        on_progress(
            DemoProgress(stage, time.monotonic() - started, snapshot, lag or [], subscriber.version, subscriber.swaps)
        )

    subscriber = ModelSubscriber(cluster)
    monitor = PipelineMonitor(cluster)
    with Supervisor(settings, run_dir) as supervisor, subscriber:
        supervisor.start("processor", ["process"])
        supervisor.start("learner", ["learn"])
        supervisor.start("scorer", ["score"])
        produce = ["produce", "--source", "synthetic", "--limit", str(options.events)]
        produce += ["--bad-fraction", str(options.bad_fraction), "--seed", str(options.seed)]
        if options.rate:
            produce += ["--rate", str(options.rate)]
        if options.label_delay is not None:
            produce += ["--label-delay", str(options.label_delay), "--label-duplicates", "0.02"]
        supervisor.start("producer", produce, expected_exit=True)

        lag: list[GroupLag] = []
        last_lag = 0.0
        producing_seconds: float | None = None
        while True:
            supervisor.check()
            snapshot = monitor.poll()
            now = time.monotonic()
            if now - last_lag > 2.0:
                lag = _probe_lag(cluster) or lag  # the live view keeps the last figures
                last_lag = now
            producer = supervisor.components["producer"]
            producer_done = producer.exit_code == 0
            if producer_done and producing_seconds is None:
                producing_seconds = now - producer.started_at
            drained = (
                producer_done
                and snapshot.produced > 0
                and snapshot.features + snapshot.quarantined == snapshot.produced
                and snapshot.predictions == snapshot.features
            )
            if drained:
                probe = _probe_lag(cluster)
                lag = probe if probe is not None else lag
                last_lag = now
                # The learner commits its input offsets only with the model
                # version that learned them; its last ones land with the final
                # version it publishes on shutdown, below.
                if probe is not None and all(g.total == 0 for g in probe if g.group != learner_group):
                    break
            progress("streaming" if not producer_done else "draining", snapshot, lag)
            if now > deadline:
                raise StreamMLError(
                    f"the pipeline did not drain within {options.timeout:g}s "
                    f"(produced {snapshot.produced}, features {snapshot.features}, "
                    f"quarantined {snapshot.quarantined}, predictions {snapshot.predictions}); logs in {run_dir}"
                )
            time.sleep(0.5)  # refresh interval of the live view, not a wait for a condition

        # The learner publishes a last version on shutdown; the SDK subscriber
        # must serve the champion then (that version, unless the quality gate
        # withheld it: a final candidate with too few held-back events is).
        progress("publishing the final model", snapshot, lag)
        exit_codes = {"learner": supervisor.stop("learner")}
        snapshot = monitor.poll()
        final_version = snapshot.champion.version if snapshot.champion else None
        if final_version is not None:
            subscriber.wait_for_version(final_version, timeout=30)
        progress("stopping", snapshot, lag)
        exit_codes.update(supervisor.stop_all())
    monitor.close()
    # Offsets are committed on shutdown: lag after it is the honest final figure.
    lag = pipeline_lag(cluster)
    snapshot = _final_snapshot(cluster)
    checks = _checks(snapshot, lag, exit_codes, subscriber, final_version, options, settings)
    return DemoResult(
        snapshot=snapshot,
        lag=lag,
        sdk_version=subscriber.version,
        sdk_swaps=subscriber.swaps,
        sdk_refused=subscriber.refused_total,
        elapsed=time.monotonic() - started,
        bootstrap_servers=settings.bootstrap_servers,
        producing_seconds=producing_seconds,
        run_dir=run_dir,
        exit_codes=exit_codes,
        checks=checks,
    )


def _probe_lag(cluster: Cluster) -> list[GroupLag] | None:
    """The pipeline's lag now, or ``None`` when the probe failed (it is bounded, see ``Cluster.list_groups``)."""
    try:
        return pipeline_lag(cluster)
    except KafkaClientError as exc:
        logger.warning("lag probe failed, trying again: %s", exc)
        return None


def _final_snapshot(cluster: Cluster, timeout: float = 60.0) -> PipelineSnapshot:
    """Read every output topic once more from the start, so the summary is what the topics hold."""
    monitor = PipelineMonitor(cluster)
    deadline = time.monotonic() + timeout
    try:
        while True:
            snapshot = monitor.poll(max_records=50_000)
            seen = sum(snapshot.versions_scored.values())
            complete = seen >= snapshot.predictions and sum(snapshot.quarantine_rules.values()) >= snapshot.quarantined
            if complete or time.monotonic() > deadline:
                return snapshot
    finally:
        monitor.close()


def _checks(
    snapshot: PipelineSnapshot,
    lag: list[GroupLag],
    exit_codes: dict[str, int],
    subscriber: Any,
    final_version: int | None,
    options: DemoOptions,
    settings: Settings,
) -> dict[str, bool]:
    checks = {
        "every event is in features or dead letters": snapshot.features + snapshot.quarantined == snapshot.produced,
        "every feature vector was scored": snapshot.predictions == snapshot.features,
        "several model versions were published": len(snapshot.versions) >= 2,
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
        "lag is back to zero": sum(g.total for g in lag) == 0,
        "every component stopped cleanly": all(code == 0 for code in exit_codes.values()),
    }
    checks.update(_drift_checks(snapshot, settings, options))
    if options.label_delay is not None:
        latest = snapshot.latest
        checks["every valid event was joined with its delayed label, once"] = snapshot.joined == snapshot.features
        checks["the learner learned every joined event"] = latest is not None and latest.n_learned == snapshot.joined
    if options.bad_fraction > 0:
        checks["bad events were quarantined with reasons"] = (
            snapshot.quarantined > 0
            and sum(snapshot.quarantine_rules.values()) == snapshot.quarantined
            and "unknown" not in snapshot.quarantine_rules
        )
    return checks


#: The field the synthetic stream drifts on at its midpoint (see producers.synthetic).
DRIFTED_FIELD = "car"


def _drift_checks(snapshot: PipelineSnapshot, settings: Settings, options: DemoOptions) -> dict[str, bool]:
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
