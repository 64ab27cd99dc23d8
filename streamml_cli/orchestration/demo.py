"""The end-to-end demo: the whole pipeline on one machine, bounded, checked.

It starts (unless given a cluster) the embedded broker, creates the topics,
runs the processor, learner and scorer as the same child processes a
deployment runs, streams a drifting synthetic event stream into them,
subscribes to the models topic in-process with the SDK, and watches the topics
until every event is accounted for. Then it stops everything it started, in
order, and returns a result the caller renders.
"""

from __future__ import annotations

import faulthandler
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from streamml.broker import EmbeddedBroker, free_port
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError, StreamMLError
from streamml.lag import GroupLag, pipeline_lag
from streamml_cli.orchestration.bounded import BoundedCalls, CallStalled
from streamml_cli.orchestration.checks import pipeline_checks, swap_checks
from streamml_cli.orchestration.monitor import PipelineMonitor, PipelineSnapshot
from streamml_cli.orchestration.supervisor import Component, Supervisor

__all__ = [
    "DEMO_TIMEOUT_EXIT", "DemoOptions", "DemoResult", "DemoProgress", "DemoTimeoutError", "default_timeout", "run_demo",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Exit code of a demo that did not finish within its timeout (see :class:`DemoTimeoutError`).
DEMO_TIMEOUT_EXIT = 4

#: Seconds between refreshes of the live view (the loop's pace, not a wait for a condition).
REFRESH_SECONDS = 0.5
#: Bound on one read of the topics or one lag probe; past it the live view keeps the last figures.
WATCH_CALL_SECONDS = 30.0
#: Bound on each step after the drain (final version, swaps, final read); the whole run's bound still applies.
STEP_SECONDS = 30.0
#: Seconds the components get to stop once a run is abandoned, before SIGKILL.
ABANDON_GRACE_SECONDS = 10.0

#: What the learner and the scorer log for each version they publish or serve (see streamml_cli.learn / .score).
PUBLISHED_LINE = r"^published {model} v(\d+) "
SERVING_LINE = r"^serving {model} v(\d+) "


class DemoTimeoutError(StreamMLError):
    """The demo did not finish within its timeout; the message names what it was waiting for (exit 4)."""

    exit_code = DEMO_TIMEOUT_EXIT


def default_timeout(events: int, rate: float | None) -> float:
    """Seconds within which a healthy demo of ``events`` events finishes, with a wide margin.

    Two minutes for start-up and shutdown, the producer's paced time, and
    the pipeline at 200 events/s: a tenth of what the slowest stage (the
    faust processor) does on a busy 2-core machine.
    """
    return 120.0 + events / 200 + (events / rate if rate else 0.0)


@dataclass(frozen=True)
class DemoOptions:
    """What ``streamml demo`` was asked for."""

    events: int = 20_000
    rate: float | None = 1000.0
    bad_fraction: float = 0.02
    seed: int = 42
    #: Seconds for the whole run (broker start to the last check), ``None``: :func:`default_timeout`.
    timeout: float | None = None
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
    #: What went wrong while watching (a read or probe that overran its bound): said, not hidden.
    notes: list[str] = field(default_factory=list)

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
    component fails, and :class:`DemoTimeoutError` (naming what it was
    waiting for) if the run has not finished within ``options.timeout``
    seconds (:func:`default_timeout` when not given). Everything started is
    stopped in any case, including on KeyboardInterrupt.
    """
    started = time.monotonic()
    timeout = options.timeout if options.timeout is not None else default_timeout(options.events, options.rate)
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
        return _Run(settings, options, run_dir, started, started + timeout, timeout, on_progress).run()
    except DemoTimeoutError:
        _dump_stacks(run_dir)
        raise
    finally:
        if broker is not None:
            broker.stop()


def _dump_stacks(run_dir: Path) -> None:
    """Write every thread's stack next to the logs: what was stuck, for the bug report."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "demo-stacks.txt", "w") as out:
            faulthandler.dump_traceback(out, all_threads=True)
    except OSError:
        logger.debug("could not write the demo's stacks", exc_info=True)


class _Run:
    """One demo run: its deadline, its bounded watchers, and the steps in order."""

    def __init__(
        self,
        settings: Settings,
        options: DemoOptions,
        run_dir: Path,
        started: float,
        deadline: float,
        timeout: float,
        on_progress: Callable[[DemoProgress], None],
    ) -> None:
        if options.label_delay is not None:
            settings = settings.with_overrides(label_mode="delayed")  # the children inherit it
        self.settings = settings
        self.options = options
        self.run_dir = run_dir
        self.started = started
        self.deadline = deadline
        self.timeout = timeout
        self.on_progress = on_progress
        self.cluster = Cluster(settings)
        # Two watchers, so a stuck lag probe does not stop the counts (or the reverse).
        self.topics_calls = BoundedCalls("reading the pipeline's topics")
        self.lag_calls = BoundedCalls("probing consumer lag")
        self.notes: list[str] = []
        self.sdk_swapped: list[int] = []
        self._swaps_lock = threading.Lock()
        self.waiting = "the broker to answer"

    # -- bounds ------------------------------------------------------------
    def left(self, cap: float = STEP_SECONDS) -> float:
        """Seconds the next step may take: ``cap``, or less when the run's deadline is nearer."""
        return max(0.0, min(cap, self.deadline - time.monotonic()))

    def check_deadline(self, snapshot: PipelineSnapshot | None = None) -> None:
        if time.monotonic() <= self.deadline:
            return
        counts = ""
        if snapshot is not None:
            counts = (
                f" (produced {snapshot.produced}, valid {snapshot.features}, quarantined {snapshot.quarantined}, "
                f"predictions {snapshot.predictions})"
            )
        raise DemoTimeoutError(
            f"the demo did not finish within {self.timeout:g}s (--timeout): waiting for {self.waiting}{counts}; "
            f"logs and stacks in {self.run_dir}"
        )

    def watch(self, calls: BoundedCalls, what: str, fn: Callable[[], T], cap: float = WATCH_CALL_SECONDS) -> T | None:
        """``fn()`` through ``calls``, or ``None`` (with a note) if it failed or overran ``cap`` or the deadline."""
        try:
            return calls.call(what, fn, self.left(cap))
        except (CallStalled, KafkaClientError) as exc:
            note = f"{exc}"
            if not self.notes or self.notes[-1] != note:  # once per kind in a row, not every refresh
                logger.warning("%s (the demo goes on with the last figures)", note)
                self.notes.append(note)
            return None

    def _on_swap(self, _old: int | None, new: int, _envelope: dict[str, Any]) -> None:
        with self._swaps_lock:
            self.sdk_swapped.append(new)

    # -- the run -----------------------------------------------------------
    def run(self) -> DemoResult:
        from consumers import ModelSubscriber  # the SDK an application would use; deferred: keeps --help light

        cluster = self.cluster
        try:
            self.check_deadline()
            cluster.wait_ready(timeout=max(self.left(), 0.1))
            self.waiting = "the topics to be created"
            cluster.create_topics(cluster.topics.specs(self.settings), timeout=max(self.left(), 0.1))
            self.waiting = "the monitor to start"
            monitor = self.topics_calls.call(
                "starting the monitor", lambda: PipelineMonitor(cluster), max(self.left(), 0.1)
            )
        except StreamMLError:
            self.check_deadline()  # a step cut short by the run's deadline is a timeout, said as one
            raise
        subscriber = ModelSubscriber(cluster, on_swap=self._on_swap)
        finished = False
        try:
            with Supervisor(self.settings, self.run_dir) as supervisor:
                subscriber.start()
                try:
                    result = self._supervise(supervisor, subscriber, monitor)
                    finished = True
                finally:
                    # An abandoned run does not wait long for the SDK's thread (a
                    # daemon: it cannot keep the process alive).
                    subscriber.stop(timeout=10.0 if finished else 2.0)
        finally:
            try:  # a close gets a few seconds even past the deadline: it frees the broker's resources
                self.topics_calls.call("closing the monitor", monitor.close, 5.0)
            except (CallStalled, KafkaClientError) as exc:
                logger.warning("%s", exc)
        return result

    def _progress(self, stage: str, snapshot: PipelineSnapshot, lag: list[GroupLag], subscriber: Any) -> None:
        self.on_progress(
            DemoProgress(stage, time.monotonic() - self.started, snapshot, lag, subscriber.version, subscriber.swaps)
        )

    def _supervise(self, supervisor: Supervisor, subscriber: Any, monitor: PipelineMonitor) -> DemoResult:
        options, cluster = self.options, self.cluster
        for offset, (name, command) in enumerate((("processor", "process"), ("learner", "learn"), ("scorer", "score"))):
            supervisor.start(name, [command, *metrics_port_args(self.settings.metrics_port, offset)])
        produce = ["produce", "--source", "synthetic", "--limit", str(options.events)]
        produce += ["--bad-fraction", str(options.bad_fraction), "--seed", str(options.seed)]
        if options.rate:
            produce += ["--rate", str(options.rate)]
        if options.label_delay is not None:
            produce += ["--label-delay", str(options.label_delay), "--label-duplicates", "0.02"]
        supervisor.start("producer", produce, expected_exit=True)

        snapshot = PipelineSnapshot()
        lag: list[GroupLag] = []
        last_lag = 0.0
        producing_seconds: float | None = None
        # Bounded twice: by the deadline (checked every refresh, and every call
        # in the loop is bounded) and by a count the deadline always reaches first.
        for _ in range(int(self.timeout / REFRESH_SECONDS) + 2):
            supervisor.check()
            snapshot = self.watch(self.topics_calls, "a read of the topics", monitor.poll) or snapshot
            now = time.monotonic()
            if now - last_lag > 2.0:
                lag = self._probe_lag() or lag  # the live view keeps the last figures
                last_lag = now
            producer = supervisor.components["producer"]
            producer_done = producer.exit_code == 0
            if producer_done and producing_seconds is None:
                producing_seconds = now - producer.started_at
            self.waiting = _waiting_for(producer_done, snapshot, options.events)
            if self.waiting == "":
                probe = self._probe_lag()
                lag = probe if probe is not None else lag
                last_lag = now
                # The learner commits its input offsets only with the model
                # version that learned them; its last ones land with the final
                # version it publishes on shutdown, below.
                behind = [g for g in probe or [] if g.group != cluster.groups.learner and g.total]
                if probe is not None and not behind:
                    break
                self.waiting = (
                    "a lag probe to answer" if probe is None
                    else "consumer lag to reach zero (" + ", ".join(f"{g.group}={g.total}" for g in behind) + ")"
                )
            stalled = self.topics_calls.stalled
            if stalled:
                self.waiting += f"; the monitor is stuck on {stalled}"
            self._progress("streaming" if not producer_done else "draining", snapshot, lag, subscriber)
            self.check_deadline(snapshot)
            time.sleep(REFRESH_SECONDS)  # the live view's refresh interval, not a wait for a condition
        else:
            self.check_deadline(snapshot)  # unreachable in practice: the deadline comes first

        # The learner publishes a last version on shutdown; the SDK subscriber
        # and the scorer must serve the champion then (that version, unless the
        # quality gate withheld it: a final candidate with too few held-back events is).
        self._progress("publishing the final model", snapshot, lag, subscriber)
        self.waiting = "the learner to stop"
        exit_codes = {"learner": supervisor.stop("learner", timeout=max(self.left(20.0), 1.0))}
        self.check_deadline(snapshot)
        model = re.escape(self.settings.model_name)
        serving = re.compile(SERVING_LINE.format(model=model), re.M)
        published = supervisor.components["learner"].log_versions(re.compile(PUBLISHED_LINE.format(model=model), re.M))
        snapshot = self._read_until_version(monitor, snapshot, max(published, default=None))
        final_version = snapshot.champion.version if snapshot.champion else None
        if final_version is not None:
            self.waiting = f"the SDK subscriber to serve v{final_version}"
            subscriber.wait_for_version(final_version, timeout=self.left())
            self.waiting = f"the scorer to serve v{final_version}"
            scorer = supervisor.components["scorer"]
            _wait_for_log_version(scorer, serving, final_version, self.left())
        self.check_deadline(snapshot)
        self._progress("stopping", snapshot, lag, subscriber)
        self.waiting = "the components to stop"
        exit_codes.update(supervisor.stop_all(timeout=max(self.left(20.0), 1.0)))
        scorer_served = supervisor.components["scorer"].log_versions(serving)
        self.check_deadline(snapshot)
        # Offsets are committed on shutdown: lag after it is the honest final figure.
        self.waiting = "the final lag"
        final_lag = self.watch(self.lag_calls, "the final lag", lambda: pipeline_lag(cluster, timeout=10.0))
        self.waiting = "the final read of the topics"
        final = self.watch(
            self.topics_calls, "the final read of the topics",
            lambda: _final_snapshot(cluster, timeout=max(self.left(60.0) - 10.0, 1.0)),
            cap=60.0,
        )
        self.check_deadline(snapshot)
        if final is None:
            final = snapshot
            self.notes.append("the summary shows the last live figures: the final read of the topics failed")
        with self._swaps_lock:
            sdk_swapped = list(self.sdk_swapped)
        checks = pipeline_checks(final, final_lag, exit_codes, subscriber, final_version, self.options, self.settings)
        checks.update(swap_checks(final, scorer_served, sdk_swapped))
        return DemoResult(
            snapshot=final,
            lag=final_lag or [],
            sdk_version=subscriber.version,
            sdk_swaps=subscriber.swaps,
            sdk_refused=subscriber.refused_total,
            elapsed=time.monotonic() - self.started,
            bootstrap_servers=self.settings.bootstrap_servers,
            producing_seconds=producing_seconds,
            run_dir=self.run_dir,
            exit_codes=exit_codes,
            checks=checks,
            notes=self.notes,
        )

    def _probe_lag(self) -> list[GroupLag] | None:
        """The pipeline's lag now, or ``None`` when the probe failed or overran its bound."""
        return self.watch(self.lag_calls, "a lag probe", lambda: pipeline_lag(self.cluster, timeout=10.0))

    def _read_until_version(
        self, monitor: PipelineMonitor, snapshot: PipelineSnapshot, version: int | None
    ) -> PipelineSnapshot:
        """Read the topics until the monitor has seen ``version`` (the learner's last) on the models topic.

        Bounded by :data:`STEP_SECONDS` and the run's deadline; ``None`` (the
        learner's log names no version) is one read.
        """
        self.waiting = f"the models topic to show v{version}" if version is not None else "a read of the topics"
        step_end = time.monotonic() + self.left()
        for _ in range(int(STEP_SECONDS / REFRESH_SECONDS) + 1):
            snapshot = self.watch(self.topics_calls, "a read of the topics", monitor.poll) or snapshot
            seen = snapshot.latest.version if snapshot.latest else None
            if version is None or (seen is not None and seen >= version) or time.monotonic() >= step_end:
                break
            time.sleep(REFRESH_SECONDS)  # between reads of the topics; the step's bound is checked above
        return snapshot


def _waiting_for(producer_done: bool, snapshot: PipelineSnapshot, events: int) -> str:
    """What the pipeline has not done yet, in words (``""``: every event is accounted for)."""
    if not producer_done:
        return f"the producer to send {events} events ({snapshot.produced} so far)"
    if snapshot.produced == 0:
        return "the monitor to see the produced events"
    handled = snapshot.features + snapshot.quarantined
    if handled != snapshot.produced:
        return f"the processor ({handled} of {snapshot.produced} events in features or dead letters)"
    if snapshot.predictions != snapshot.features:
        return f"the scorer ({snapshot.predictions} of {snapshot.features} feature vectors scored)"
    return ""


def _wait_for_log_version(component: Component, pattern: re.Pattern[str], version: int, timeout: float) -> bool:
    """Wait until ``component``'s log has a ``pattern`` line for ``version`` or newer; ``False`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 2):
        if max(component.log_versions(pattern), default=0) >= version:
            return True
        if time.monotonic() >= deadline or component.exit_code is not None:
            return False
        time.sleep(0.1)  # the log is a file: re-read it between checks, bounded by the deadline above
    return False


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


def metrics_port_args(port: int | None, offset: int) -> list[str]:
    """``--metrics-port`` for the demo's ``offset``-th component: ``STREAMML_METRICS_PORT`` + offset.

    The three children share one environment, so the setting alone would have
    them all ask for the same port. Port 0 (any free port) stays 0 for each.

    >>> metrics_port_args(9400, 2), metrics_port_args(0, 1), metrics_port_args(None, 0)
    (['--metrics-port', '9402'], ['--metrics-port', '0'], [])
    """
    if port is None:
        return []
    return ["--metrics-port", str(port + offset if port else 0)]
