"""``python -m benchmarks.learner_startup``: time to a first model version on a topic that already holds data.

Each round makes a namespace whose features topic already holds N feature
vectors (the bytes :class:`~stream_processors.pipeline.BatchProcessor`
writes for the demo events; quick: 3,000, full: 30,000), then times, as
child processes, one after the other (which goes first alternates):

- **candidate**: ``streamml --log-format json learn`` (the default model and
  cadence), from the spawn to the arrival of its first record on the
  models topic (a fresh model reads the history, then publishes v1);
- **baseline**: a child that imports river, reads the same topic with a bare
  confluent-kafka consumer (``assign()``, from the start to the high
  watermark of the fetch responses, ``docs/embedded-broker.md#list-offsets``),
  learns the same model with ``predict_one`` / ``learn_one`` and produces
  one record of the pickled model to an output topic.

Arrivals are seen by a bare consumer in this process
(:class:`benchmarks.broker_runs.OutputCounter`). The learner's JSON log
lines, and the baseline's own phase lines, give a breakdown: seconds from
the spawn to each phase. Without ``--bootstrap-servers`` it starts the
embedded broker itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fastavro.schema import to_parsing_canonical_form

from benchmarks import workloads
from benchmarks.broker_runs import fill, run_child
from benchmarks.harness import broker_at
from benchmarks.pipeline_runs import Round
from stream_processors.batches import SourceRecord
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.serde import bundled_schema

__all__ = ["feature_records", "phases", "signed_round", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "learner_startup.json"
CANDIDATE, BASELINE = "streamml_learn", "river_loop"
#: ``streamml learn`` with its start-up calls timed (own namespace; not in the ratio).
TRACED = "streamml_learn_traced"
#: Phases of ``streamml learn`` read from its JSON log: name -> text the message starts with.
_PHASES = (
    ("first_log_line", ""),
    ("history_known", "fresh "),
    ("assigned", "rebalance: assigned"),
    ("caught_up", "caught up on"),
    ("published", "published "),
)


def feature_records(n: int, *, partitions: int) -> list[SourceRecord]:
    """The feature vectors the processor writes for ``n`` demo events, each with its partition."""
    from stream_processors.pipeline import BatchProcessor

    processor = BatchProcessor.from_settings(workloads.demo_settings())
    records = workloads.source_records(n, bad_fraction=0.0, partitions=partitions)
    windows: dict[bytes, Any] = {}
    out: list[SourceRecord] = []
    for start in range(0, len(records), 500):
        result = processor.process_batch(records[start : start + 500], windows)
        for key, update in result.window_updates.items():
            windows[key] = update.state
        for f in result.features:
            partition = f.source.partition if f.partition is None else f.partition
            out.append(SourceRecord(f.value, f.key, tuple(f.headers), "features", partition % partitions, 0))
    return out


def phases(log: Path, spawned: float) -> tuple[dict[str, float], dict[str, float], int | None]:
    """Seconds from ``spawned`` (epoch) to each phase of a child, how long each timed call took, and n_learned.

    Phases are the first JSON log line of each of :data:`_PHASES` (``streamml
    learn``) and the children's own ``{"phase": ...}`` lines; ``n_learned``
    is the first version's (or the baseline's) count of learned records.
    """
    at: dict[str, float] = {}
    took: dict[str, float] = {}
    learned: int | None = None
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if learned is None and "n_learned" in entry:
            learned = int(entry["n_learned"])
        if "phase" in entry:
            at.setdefault(entry["phase"], entry["ts"] - spawned)
            if entry["took"] is not None:
                took.setdefault(entry["phase"], entry["took"])
            continue
        ts = datetime.fromisoformat(entry["ts"]).timestamp()
        for name, prefix in _PHASES:
            if name not in at and str(entry.get("message", "")).startswith(prefix):
                at[name] = ts - spawned
    return dict(sorted(at.items(), key=lambda item: item[1])), took, learned


def signed_round(bootstrap: str, root: Path, *, partitions: int = 3) -> Round:
    """A fresh namespace with its topics and its own signing key pair (``<home>/keys``, found by default)."""
    from streamml.cluster import Cluster
    from streamml.config import load_settings
    from streamml.signing import generate_key_pair

    namespace = f"b{uuid.uuid4().hex[:8]}."
    home = root / namespace.rstrip(".")
    generate_key_pair(home / "keys")
    settings = load_settings(env={}, bootstrap_servers=bootstrap, namespace=namespace, home=home,
                             partitions=partitions)
    cluster = Cluster(settings)
    cluster.create_topics(cluster.topics.specs(settings))
    return Round(bootstrap, home, settings, 0, cluster)


def _one(r: Round, name: str, index: int) -> dict[str, Any]:
    features = r.cluster.topics.features
    if name == CANDIDATE:
        command = [sys.executable, "-m", "streamml_cli", "--log-format", "json", "learn"]
        outputs = {r.cluster.topics.models: [0]}
    elif name == TRACED:
        command = [sys.executable, "-m", "benchmarks.learner_startup", "--child", "traced"]
        outputs = {r.cluster.topics.models: [0]}
    else:
        outputs = r.outputs(f"model-{index}")
        schema = r.home / "feature_vector.json"  # the child imports nothing of streamml: it is read from here
        r.home.mkdir(parents=True, exist_ok=True)
        schema.write_text(to_parsing_canonical_form(bundled_schema(FEATURE_VECTOR_SCHEMA).parsed))
        command = [sys.executable, "-m", "benchmarks.bare_learner", "--source", features, "--dest",
                   next(iter(outputs)), "--partitions", str(r.settings.partitions), "--bootstrap-servers",
                   r.bootstrap, "--schema", str(schema)]
    log = r.home / f"{name}.log"
    r.home.mkdir(parents=True, exist_ok=True)
    spawned = time.time()
    env = {**r.env(), "STREAMML_LOG_LEVEL": "INFO"}  # the phases are INFO lines
    result = run_child([command], bootstrap=r.bootstrap, outputs=outputs, expected=1, env=env, log=log, timeout=120)
    at, took, learned = phases(log, spawned)
    return {"first_version_s": result.first_output_s, "cpu_s": result.total_cpu_s, "n_learned": learned,
            "phases": at, "calls": took}


def run(bootstrap: str | None, *, events: int, rounds: int, partitions: int = 3) -> dict[str, Any]:
    """Alternate both contestants over ``rounds`` fresh namespaces of ``events`` feature vectors each."""
    logging.getLogger("stream_processors").setLevel(logging.ERROR)  # the demo drifts on purpose
    records = feature_records(events, partitions=partitions)
    out: dict[str, list[dict[str, Any]]] = {CANDIDATE: [], BASELINE: [], TRACED: []}
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        for index in range(rounds):
            r = signed_round(servers, Path(scratch), partitions=partitions)
            fill(servers, r.cluster.topics.features, records)
            order = (CANDIDATE, BASELINE) if index % 2 == 0 else (BASELINE, CANDIDATE)
            traced = signed_round(servers, Path(scratch), partitions=partitions)
            fill(servers, traced.cluster.topics.features, records)
            for name, where in [(name, r) for name in order] + [(TRACED, traced)]:
                out[name].append(_one(where, name, index))
                print(f"round {index + 1} {name}: {out[name][-1]['first_version_s']:.2f} s", file=sys.stderr)
    ratios = [c["first_version_s"] / b["first_version_s"] for c, b in zip(out[CANDIDATE], out[BASELINE], strict=True)]
    return {
        "features": len(records),
        "rounds": rounds,
        "ratio_definition": "streamml learn time to first version / baseline's, per round; median",
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "contestants": {
            name: {"first_version_s": statistics.median(x["first_version_s"] for x in runs), "rounds": runs}
            for name, runs in out.items()
        },
    }


def _phase(name: str, took: float | None = None, **extra: Any) -> None:
    """One phase line of a child: its name, when it ended (epoch s) and, for a call, how long it took."""
    print(json.dumps({"phase": name, "ts": time.time(), "took": took, **extra}), flush=True)


#: What the traced ``streamml learn`` times, in the order it calls them: (module, class, method).
_TRACED = (
    ("streamml.cluster", "Cluster", "require_topics"),
    ("model_publisher.learning_loop", "LearningLoop", "check_sources"),
    ("model_publisher.publisher", "ModelPublisher", "start"),
    ("model_publisher.learning_loop", "LearningLoop", "_committed"),
    ("model_publisher.learning_loop", "LearningLoop", "_initial_learner"),
    ("model_publisher.learning_loop", "LearningLoop", "_crown_served"),
    ("model_publisher.learning_loop", "LearningLoop", "_history"),
)


def traced_child() -> None:
    """``streamml --log-format json learn`` with its start-up calls timed (imports first, then each call)."""
    import importlib

    import streamml_cli

    for module in {m for m, _, _ in _TRACED} | {"model_publisher.catalog", "streamml_cli.learn"}:
        importlib.import_module(module)
    _phase("imported")

    def timed(owner: Any, method: str) -> None:
        original = getattr(owner, method)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                _phase(f"{owner.__name__}.{method}", time.time() - started)

        setattr(owner, method, wrapper)

    for module, owner, method in _TRACED:
        timed(getattr(sys.modules[module], owner), method)
    streamml_cli.main(["--log-format", "json", "learn"])


def _median(runs: Sequence[dict[str, Any]], part: str, key: str) -> float:
    values = [run[part][key] for run in runs if key in run[part]]
    return statistics.median(values) if values else float("nan")


def format_report(result: dict[str, Any]) -> str:
    """Time to first version per contestant, then its phases (s from the spawn) and timed calls; medians."""
    lines = [f"{result['features']:,} feature vectors on the topic, {result['rounds']} round(s), medians"]
    for name, c in result["contestants"].items():
        runs = c["rounds"]
        cpu = statistics.median(run["cpu_s"] for run in runs)
        lines.append(f"{name:<22} first version {c['first_version_s']:6.2f} s   child CPU {cpu:.2f} s")
        for key in runs[0]["phases"]:
            took = f"   (call took {_median(runs, 'calls', key):.2f} s)" if key in runs[0]["calls"] else ""
            lines.append(f"    {_median(runs, 'phases', key):6.2f} s  {key}{took}")
    lines.append(f"ratio streamml learn / baseline: {result['ratio']:.2f} "
                 f"(per round: {', '.join(f'{x:.2f}' for x in result['ratios'])})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner_startup", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 feature vectors, 1 round")
    parser.add_argument("--rounds", type=int, default=None, metavar="N", help="rounds (default: 1 quick, 3 full)")
    parser.add_argument("--events", type=int, default=None, help="feature vectors on the topic")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    parser.add_argument("--child", choices=("traced",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "traced":
        traced_child()
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    events = args.events or (3_000 if args.quick else 30_000)
    result = run(args.bootstrap_servers, events=events, rounds=rounds)
    print(format_report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"quick": args.quick, "learner_startup": result}, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
