"""``python -m benchmarks.training_modes``: static or dynamic training, measured on the demo's drifting stream.

The stream is the demo's: :class:`producers.synthetic.SyntheticSource` (a
concept drift and a feature drift at ``drift_position``, half the length),
featurized in memory by :class:`stream_processors.pipeline.BatchProcessor`
exactly as the stream processor does (Avro-encoded records keyed by customer,
batches of 500 in event-time order, window state carried between batches).
No broker is involved and a seed gives the same numbers every run.

Every serving mode is evaluated prequentially on the same ``(features,
label)`` sequence: each event is predicted by the model being served at that
moment, before anything learns from it. The modes:

``online``
    ``OnlineLearner(catalog.build("logistic"))``, test-then-train on every
    event (what ``streamml learn`` measures);
``online_published``
    what consumers of that learner are served: a frozen copy of its model,
    refreshed every ``publish_every`` learned events;
``batch_scheduled``
    ``batch_catalog.build_batch("logistic")`` (scikit-learn), fit on the
    first ``warmup`` events, then refit every ``retrain_every`` events on the
    last ``window`` events;
``batch_once``
    the same first fit, never refit: the static baseline;
``gated_online``
    a champion that only changes through :class:`model_publisher.gate.QualityGate`:
    every online version is a candidate, scored against the champion on the
    next ``gate_events`` events (which neither has learned) and promoted if
    not worse by more than the margin;
``gated_mixed``
    the same gate, with candidates from both the online learner and the
    scheduled batch refits (at the same event, the online one is judged
    first, then the batch one against whoever is champion by then);
``majority``
    a reference, not a serving mode: the majority class of the first
    ``warmup`` labels, always.

Accuracy is reported per phase: **before** the drift (``[warmup,
drift_position)``), **during** (the ``during`` events from
``drift_position``), **after** (the rest; **final** is its last ``during``
events, where every adaptive mode has settled) and **overall** (from ``warmup``);
and the **recovery**: events from ``drift_position`` until the accuracy over
the trailing ``recovery_window`` events first reaches ``recovery_level``.
Medians over seeds. See docs/training-modes.md for the measured table.

Examples::

    python -m benchmarks.training_modes                        # 20,000 events, seeds 1,2,3
    python -m benchmarks.training_modes --events 8000 --seeds 7 --json /tmp/modes.json
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.report import write_json
from benchmarks.workloads import demo_settings, source_records
from model_publisher.batch_catalog import build_batch
from model_publisher.catalog import build
from model_publisher.gate import QualityGate
from model_publisher.learner import OnlineLearner
from stream_processors.pipeline import BatchProcessor
from streamml.sklearn_format import SklearnModel

if TYPE_CHECKING:
    import pandas

__all__ = [
    "DEFAULT_JSON",
    "MODES",
    "PHASES",
    "Schedule",
    "Stream",
    "SeedResult",
    "featurized_stream",
    "run_seed",
    "run",
    "summarize",
    "costs",
    "format_table",
    "format_costs",
    "to_json",
    "main",
]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "training_modes.json"

#: Serving modes in table order, with the label the table prints.
MODES: dict[str, str] = {
    "online": "online (test-then-train, every event)",
    "online_published": "online, published every {publish_every:,} events",
    "batch_scheduled": "batch, retrained every {retrain_every:,} on the last {window:,}",
    "batch_once": "batch, trained once (static)",
    "gated_online": "gated champion (online candidates)",
    "gated_mixed": "gated champion (online + batch candidates)",
    "majority": "reference: majority class of the first {warmup:,}",
}
#: The gated modes: each reports its gate decisions.
GATED = ("gated_online", "gated_mixed")
PHASES = ("before", "during", "after", "final", "overall")

Event = tuple[dict[str, float], Any]
_TOPIC = "features.v1"


@dataclass(frozen=True)
class Schedule:
    """When models are trained, published and judged, in events (the defaults are the brief's)."""

    #: Events before the first model exists; evaluation starts here.
    warmup: int = 2000
    #: Online versions: published (and offered to the gate) every this many learned events.
    publish_every: int = 2000
    #: Batch refits: every this many events after the first fit ...
    retrain_every: int = 5000
    #: ... on this many most recent events.
    window: int = 5000
    #: Held-back events the gate scores candidate and champion on.
    gate_events: int = 200
    #: Gate margin, in accuracy points.
    margin: float = 0.02
    #: Length of the "during" phase, from the drift position (and of "final", the last events of "after").
    during: int = 1000
    #: Raw records per processor batch.
    batch_size: int = 500
    #: Recovery: accuracy over this many trailing events ...
    recovery_window: int = 500
    #: ... back at this level.
    recovery_level: float = 0.90

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be at least 1, got {getattr(self, name)}"
            for name in ("warmup", "publish_every", "retrain_every", "window", "gate_events", "during",
                         "batch_size", "recovery_window")
            if getattr(self, name) < 1
        ]
        if self.gate_events >= min(self.publish_every, self.retrain_every):
            problems.append(
                f"gate_events ({self.gate_events}) must be smaller than publish_every and retrain_every, "
                "so each decision is made before the next candidate arrives"
            )
        if problems:
            raise ValueError("schedule: " + "; ".join(problems))

    def labels(self) -> dict[str, str]:
        """:data:`MODES` with this schedule's numbers filled in."""
        return {mode: label.format(**asdict(self)) for mode, label in MODES.items()}


@dataclass
class Stream:
    """The featurized events of one seed, in order."""

    events: list[Event]
    drift_position: int
    quarantined: int
    featurize_seconds: float
    #: Every event as one row, columns sorted, absent features 0.0 (built on first use).
    _frame: pandas.DataFrame | None = None

    @property
    def frame(self) -> pandas.DataFrame:
        if self._frame is None:
            self._frame = _to_frame([x for x, _ in self.events])
        return self._frame


@dataclass
class SeedResult:
    """One seed's numbers: accuracy per mode and phase, recovery, gate decisions, costs."""

    seed: int
    events: int
    drift_position: int
    quarantined: int
    accuracy: dict[str, dict[str, float]]
    #: Events after the drift until the trailing accuracy is back at the level; None: not in the run.
    recovery: dict[str, int | None]
    decisions: dict[str, list[dict[str, Any]]]
    #: Seconds: featurizing, online learning, each batch fit, gate scoring per gated mode.
    costs: dict[str, Any] = field(default_factory=dict)

    def gate_counts(self, mode: str) -> tuple[int, int]:
        """``(promoted, refused)`` candidates of a gated mode."""
        promoted = sum(1 for d in self.decisions[mode] if d["promoted"])
        return promoted, len(self.decisions[mode]) - promoted


def _to_frame(rows: Sequence[Mapping[str, float]]) -> pandas.DataFrame:
    """Rows as a DataFrame with sorted columns, a feature absent from a row 0.0 (as the snapshot reads them)."""
    import pandas

    columns = sorted({name for row in rows for name in row})
    return pandas.DataFrame([[row.get(name, 0.0) for name in columns] for row in rows], columns=columns)


def featurized_stream(n: int, seed: int, *, batch_size: int = 500) -> Stream:
    """``n`` synthetic events through the stream processor's featurization, in memory.

    Events carry a fixed fake clock (:func:`benchmarks.workloads.source_records`),
    so they are in event-time order and the per-customer windows are the same
    every run. Quarantined records are counted and left out (none with the
    source's default of no bad rows).
    """
    from producers.synthetic import SyntheticSource

    started = time.perf_counter()
    processor = BatchProcessor.from_settings(demo_settings())
    records = source_records(n, seed=seed, bad_fraction=0.0)
    windows: dict[bytes, Any] = {}
    events: list[Event] = []
    quarantined = 0
    for start in range(0, len(records), batch_size):
        result = processor.process_batch(records[start : start + batch_size], windows)
        for key, update in result.window_updates.items():
            windows[key] = update.state
        quarantined += len(result.dead_letters)
        for out in result.features:
            vector = processor.feature_codec.decode(out.value, out.headers)
            if vector.label is not None:
                events.append((dict(vector.features), vector.label))
    drift = SyntheticSource(n, seed=seed).drift_position
    return Stream(events, drift, quarantined, time.perf_counter() - started)


def _predict(model: Any, stream: Stream, start: int, stop: int) -> list[Any]:
    """Predictions of a fixed model for events ``[start, stop)``: in one call for a scikit-learn model."""
    if start >= stop:
        return []
    if isinstance(model, SklearnModel):
        return model.predict_many(stream.frame.iloc[start:stop])
    return [model.predict_one(x) for x, _ in stream.events[start:stop]]


def _serve(stream: Stream, changes: Sequence[tuple[int, Any]], start: int) -> list[bool]:
    """Hits of events ``[start, n)`` when the served model becomes ``model`` at each ``(event, model)``.

    ``changes`` is in event order and the first change is at or before ``start``.
    """
    n = len(stream.events)
    if not changes or changes[0][0] > start:
        raise ValueError(f"no model is served at event {start}")
    hits: list[bool] = []
    bounds = [max(at, start) for at, _ in changes] + [n]
    for (_, model), begin, end in zip(changes, bounds, bounds[1:], strict=False):
        predictions = _predict(model, stream, begin, end)
        hits += [p == y for p, (_, y) in zip(predictions, stream.events[begin:end], strict=True)]
    return hits


@dataclass
class _Candidate:
    at: int
    kind: str
    model: Any


def _online(stream: Stream, schedule: Schedule) -> tuple[list[bool], list[_Candidate], float]:
    """Test-then-train over the stream; the frozen versions published along the way; seconds spent."""
    learner = OnlineLearner(build("logistic"))
    hits: list[bool] = []
    versions: list[_Candidate] = []
    started = time.perf_counter()
    for i, (x, y) in enumerate(stream.events):
        if i >= schedule.warmup and (i - schedule.warmup) % schedule.publish_every == 0:
            versions.append(_Candidate(i, "online", copy.deepcopy(learner.model)))
        predicted = learner.process(x, y, topic=_TOPIC, partition=0, offset=i)
        if i >= schedule.warmup:
            hits.append(predicted == y)
    return hits, versions, time.perf_counter() - started


def _batch_fits(stream: Stream, schedule: Schedule) -> tuple[list[_Candidate], list[float]]:
    """The scheduled scikit-learn fits (the first one is the static model) and the seconds each took.

    A refit whose window holds one class only is skipped (the batch trainer
    refuses such a snapshot); the first fit must have both.
    """
    n = len(stream.events)
    fits: list[_Candidate] = []
    seconds: list[float] = []
    at = schedule.warmup
    while at < n:
        rows = stream.events[max(0, at - schedule.window) : at] if fits else stream.events[:at]
        labels = [y for _, y in rows]
        if len(set(labels)) < 2:
            if not fits:
                raise ValueError(f"the first {at} events hold one class only: lengthen the warmup")
        else:
            started = time.perf_counter()
            frame = _to_frame([x for x, _ in rows])
            estimator = build_batch("logistic").fit(frame, labels)
            seconds.append(time.perf_counter() - started)
            fits.append(_Candidate(at, "batch", SklearnModel(estimator, list(frame.columns))))
        at += schedule.retrain_every
    return fits, seconds


def _gated(
    stream: Stream, candidates: Sequence[_Candidate], schedule: Schedule
) -> tuple[list[bool], list[dict[str, Any]], float]:
    """Serve a gated champion; every candidate judged on the ``gate_events`` after it was frozen.

    Candidates at the same event are judged one after the other, in the
    order given, each against the champion as it stands then.
    """
    gate = QualityGate(margin=schedule.margin)
    champion: Any | None = None
    changes: list[tuple[int, Any]] = []
    decisions: list[dict[str, Any]] = []
    started = time.perf_counter()
    for candidate in sorted(candidates, key=lambda c: c.at):  # stable: same-event order kept
        held_back = stream.events[candidate.at : candidate.at + schedule.gate_events]
        decision = gate.judge(candidate.model, champion, held_back)
        decided_at = candidate.at if champion is None else candidate.at + len(held_back)
        decisions.append({
            "at": candidate.at, "kind": candidate.kind, "decided_at": decided_at, "promoted": decision.promoted,
            "candidate": decision.candidate, "champion": decision.champion, "reason": decision.reason,
        })
        if decision.promoted:
            champion = candidate.model
            changes.append((decided_at, champion))
    gate_seconds = time.perf_counter() - started
    return _serve(stream, changes, schedule.warmup), decisions, gate_seconds


def _phases(hits: Sequence[bool], drift: int, schedule: Schedule, n: int) -> dict[str, float]:
    """Accuracy per phase; ``hits[0]`` is event ``warmup``."""
    w = schedule.warmup
    bounds = {
        "before": (w, drift),
        "during": (max(w, drift), min(n, drift + schedule.during)),
        "after": (max(w, drift + schedule.during), n),
        "final": (max(w, n - schedule.during), n),
        "overall": (w, n),
    }
    result = {}
    for phase, (a, b) in bounds.items():
        if b <= a:
            raise ValueError(f"phase {phase} is empty ({a}..{b}): lengthen the stream or shorten the warmup")
        result[phase] = sum(hits[a - w : b - w]) / (b - a)
    return result


def _recovery(hits: Sequence[bool], drift: int, schedule: Schedule) -> int | None:
    """Events from the drift until the trailing ``recovery_window`` accuracy reaches ``recovery_level``."""
    w, size = schedule.warmup, schedule.recovery_window
    window = sum(hits[drift - w : drift - w + size])
    for end in range(drift + size, schedule.warmup + len(hits) + 1):
        if end > drift + size:
            window += hits[end - 1 - w] - hits[end - 1 - size - w]
        if window >= schedule.recovery_level * size:
            return end - drift
    return None


def run_seed(n: int, seed: int, schedule: Schedule = Schedule()) -> SeedResult:
    """Every serving mode on one seed's stream of ``n`` events."""
    stream = featurized_stream(n, seed, batch_size=schedule.batch_size)
    n = len(stream.events)
    if stream.drift_position - schedule.warmup < 1 or stream.drift_position >= n:
        raise ValueError(f"the drift ({stream.drift_position}) must come after the warmup and before the end")
    hits: dict[str, list[bool]] = {}
    decisions: dict[str, list[dict[str, Any]]] = {}
    costs: dict[str, Any] = {"featurize_s": stream.featurize_seconds}

    hits["online"], versions, costs["online_learn_s"] = _online(stream, schedule)
    hits["online_published"] = _serve(stream, [(c.at, c.model) for c in versions], schedule.warmup)
    fits, costs["batch_fit_s"] = _batch_fits(stream, schedule)
    hits["batch_scheduled"] = _serve(stream, [(c.at, c.model) for c in fits], schedule.warmup)
    hits["batch_once"] = _serve(stream, [(fits[0].at, fits[0].model)], schedule.warmup)
    hits["gated_online"], decisions["gated_online"], costs["gate_online_s"] = _gated(stream, versions, schedule)
    hits["gated_mixed"], decisions["gated_mixed"], costs["gate_mixed_s"] = _gated(stream, versions + fits, schedule)
    majority = Counter(y for _, y in stream.events[: schedule.warmup]).most_common(1)[0][0]
    hits["majority"] = [y == majority for _, y in stream.events[schedule.warmup :]]

    drift = stream.drift_position
    return SeedResult(
        seed=seed,
        events=n,
        drift_position=drift,
        quarantined=stream.quarantined,
        accuracy={mode: _phases(hits[mode], drift, schedule, n) for mode in MODES},
        recovery={mode: _recovery(hits[mode], drift, schedule) for mode in MODES},
        decisions=decisions,
        costs=costs,
    )


def _median_recovery(values: Sequence[int | None]) -> int | None:
    """Median with "not recovered" as infinitely late; None when the median itself did not recover."""
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    if any(v is None for v in middle):
        return None
    return round(statistics.median([v for v in middle if v is not None]))


def summarize(results: Sequence[SeedResult], schedule: Schedule) -> dict[str, dict[str, Any]]:
    """Per mode: the median accuracy per phase, the median recovery and, for gated modes, the counts."""
    summary: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        entry: dict[str, Any] = {
            "label": schedule.labels()[mode],
            **{phase: statistics.median(r.accuracy[mode][phase] for r in results) for phase in PHASES},
            "recovery_events": _median_recovery([r.recovery[mode] for r in results]),
        }
        if mode in GATED:
            entry["promoted_refused_per_seed"] = [list(r.gate_counts(mode)) for r in results]
        summary[mode] = entry
    return summary


def run(n: int, seeds: Sequence[int], schedule: Schedule = Schedule(),
        progress: Callable[[str], None] | None = None) -> tuple[list[SeedResult], dict[str, dict[str, Any]]]:
    """Every seed, then the medians."""
    results = []
    for seed in seeds:
        started = time.perf_counter()
        results.append(run_seed(n, seed, schedule))
        if progress is not None:
            progress(f"seed {seed}: {time.perf_counter() - started:.1f} s")
    return results, summarize(results, schedule)


def format_table(summary: Mapping[str, Mapping[str, Any]], schedule: Schedule) -> str:
    """The README table: one row per serving mode, accuracy per phase (medians), recovery, gate counts."""
    header = [
        "serving mode", "before drift", f"during (first {schedule.during:,})", "after",
        f"of which the last {schedule.during:,}", "overall",
        f"back to {schedule.recovery_level:.0%} (events after drift)", "promoted / refused",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for entry in summary.values():
        recovery = entry["recovery_events"]
        counts = entry.get("promoted_refused_per_seed")
        cells = [
            entry["label"],
            *(f"{entry[phase]:.3f}" for phase in PHASES),
            "not in run" if recovery is None else f"{recovery:,}",
            " · ".join(f"{p}/{r}" for p, r in counts) if counts else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def costs(results: Sequence[SeedResult]) -> dict[str, float]:
    """Median seconds per seed of each kind of work (a batch fit: the median single fit)."""
    return {
        "featurize_s": statistics.median(r.costs["featurize_s"] for r in results),
        "online_learn_s": statistics.median(r.costs["online_learn_s"] for r in results),
        "batch_fit_s": statistics.median(s for r in results for s in r.costs["batch_fit_s"]),
        "batch_fits": statistics.median(len(r.costs["batch_fit_s"]) for r in results),
        "gate_online_s": statistics.median(r.costs["gate_online_s"] for r in results),
        "gate_mixed_s": statistics.median(r.costs["gate_mixed_s"] for r in results),
    }


def format_costs(spent: Mapping[str, float], events: int) -> str:
    """One line: what each kind of training costs per seed."""
    return (
        f"per seed (medians): featurize {spent['featurize_s']:.2f} s; online test-then-train of {events:,} events "
        f"{spent['online_learn_s']:.2f} s; one batch fit {spent['batch_fit_s'] * 1000:.0f} ms "
        f"(x{spent['batch_fits']:g}); gate scoring {spent['gate_online_s']:.2f} s (online candidates), "
        f"{spent['gate_mixed_s']:.2f} s (online + batch, row-at-a-time scikit-learn)"
    )


def to_json(results: Sequence[SeedResult], summary: Mapping[str, Any], schedule: Schedule, *,
            command: str, wall_seconds: float) -> dict[str, Any]:
    """The whole run: the command, the machine, the schedule, the medians, the costs, every seed's numbers."""
    return {
        "benchmark": "training_modes",
        "command": command,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "wall_seconds": round(wall_seconds, 2),
        "schedule": asdict(schedule),
        "seeds": [r.seed for r in results],
        "median": summary,
        "costs": costs(results),
        "per_seed": [asdict(r) for r in results],
    }


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.training_modes",
        description="Online, scheduled batch and gated champion, prequentially, on the demo's drifting stream.",
    )
    parser.add_argument(
        "--events", type=int, default=20_000, metavar="N", help="events per seed (default: %(default)s)"
    )
    parser.add_argument("--seeds", type=_seeds, default=[1, 2, 3], metavar="S,S,...", help="default: 1,2,3")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write results (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    # The drift is deliberate: the monitor's and the learner's warnings about it are not results.
    for name in ("stream_processors", "model_publisher"):
        logging.getLogger(name).setLevel(logging.ERROR)
    schedule = Schedule()
    started = time.perf_counter()
    try:
        results, summary = run(args.events, args.seeds, schedule, progress=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:  # a stream too short for the schedule
        parser.error(str(exc))
    wall = time.perf_counter() - started
    command = "python -m benchmarks.training_modes " + " ".join(sys.argv[1:] if argv is None else argv)
    print(format_table(summary, schedule))
    print("\n" + format_costs(costs(results), args.events))
    print(f"{args.events:,} events x {len(args.seeds)} seeds ({','.join(map(str, args.seeds))}), "
          f"medians; wall time {wall:.1f} s on {os.cpu_count()} cpus")
    write_json(to_json(results, summary, schedule, command=command.strip(), wall_seconds=wall), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
