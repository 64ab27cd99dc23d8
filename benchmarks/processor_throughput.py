"""``python -m benchmarks.processor_throughput``: ``streamml process`` beside what a user would pick instead.

Every round fills a fresh raw topic (3 partitions) on the broker with N
synthetic Avro events of the demo schema, 3% of them invalid, then runs each
contestant as a child process over it, from the start, with its own group:

- **candidate** ``streamml_process``: the real ``streamml process`` (decode,
  contract, features, windows in a faust table with its changelog, drift
  monitoring, dead letters), done when the features and dead-letter topics
  hold all N;
- ``faust_forward``: a bare faust agent forwarding bytes in batches;
- ``confluent_forward``: a confluent-kafka consume -> produce loop;
- ``quix_work``: quixstreams doing the same record work with the kernel's
  functions (:mod:`benchmarks.quix_apps`); ``quix_forward``: quixstreams
  forwarding bytes. Both run in ``.venv-quix`` (made once; in ``--quick``
  mode they are skipped, and the table says so, when it is absent).

The order of the contestants rotates from round to round, so a slow stretch
of the shared machine does not always land on the same one. Per contestant
it reports the median events/s from its first output to its last, the
median including start-up and group join, CPU µs per event while output
flowed, and the ratio candidate/baseline (median of per-round ratios).
Without ``--bootstrap-servers`` it starts the embedded broker.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.broker_runs import RunResult
from benchmarks.harness import broker_at
from benchmarks.pipeline_runs import CONTESTANTS, QUIX, Round, quix_python, run_contestant
from benchmarks.report import environment

__all__ = ["CANDIDATE", "run", "summarize", "format_rows", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "processor_throughput.json"
CANDIDATE = "streamml_process"


def run(
    bootstrap: str | None, *, events: int, rounds: int, contestants: Sequence[str], home: Path | None = None
) -> dict[str, list[RunResult]]:
    """Run ``contestants`` over ``rounds`` fresh rounds of ``events`` events; results by contestant, in round order."""
    results: dict[str, list[RunResult]] = {name: [] for name in contestants}
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch:
        root = home or Path(scratch)
        with broker_at(bootstrap, root) as servers:
            for index in range(rounds):
                r = Round.prepare(servers, root, events=events)
                order = list(contestants[index % len(contestants):]) + list(contestants[: index % len(contestants)])
                for name in order:
                    started = time.perf_counter()
                    result = run_contestant(name, r)
                    results[name].append(result)
                    print(f"round {index + 1}/{rounds} {name}: {result.steady_rate:,.0f} events/s, "
                          f"{result.cpu_us_per_event:.0f} µs CPU/event ({time.perf_counter() - started:.1f} s)",
                          file=sys.stderr)
    return results


def _ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    # A CPU figure below the clock tick (10 ms over a short run) reads 0: no ratio to tell.
    return statistics.median(c / b if b > 0 else math.inf for c, b in zip(candidate, baseline, strict=True))


def summarize(results: Mapping[str, Sequence[RunResult]], candidate: str = CANDIDATE) -> dict[str, dict[str, Any]]:
    """Medians per contestant and, for each baseline, candidate/baseline ratios of the same rounds."""
    mine = results[candidate]
    summary: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        steady = [r.steady_rate for r in runs]
        total = [r.total_rate for r in runs]
        summary[name] = {
            "events_per_s": statistics.median(steady),
            "events_per_s_incl_startup": statistics.median(total),
            "cpu_us_per_event": statistics.median(r.cpu_us_per_event for r in runs),
            "first_output_s": statistics.median(r.first_output_s for r in runs),
            "peak_rss_mb": statistics.median(max(r.peak_rss_bytes) for r in runs) / 2**20,
            "ratio": _ratio([r.steady_rate for r in mine], steady),
            "ratio_incl_startup": _ratio([r.total_rate for r in mine], total),
            "cpu_ratio": _ratio([r.cpu_us_per_event for r in mine], [r.cpu_us_per_event for r in runs]),
            "rounds": [r.to_dict() for r in runs],
        }
    return summary


def format_rows(summary: Mapping[str, Mapping[str, Any]], skipped: Mapping[str, str]) -> str:
    """The terminal table: one line per contestant, then one per skipped contestant with the reason."""
    header = ("contestant", "events/s", "ratio", "incl. start", "ratio", "first out s", "CPU µs/ev", "peak MB")
    rows = [header]
    for name, s in summary.items():
        rows.append((
            name, f"{s['events_per_s']:,.0f}", f"{s['ratio']:.3f}", f"{s['events_per_s_incl_startup']:,.0f}",
            f"{s['ratio_incl_startup']:.3f}", f"{s['first_output_s']:.1f}", f"{s['cpu_us_per_event']:.1f}",
            f"{s['peak_rss_mb']:.0f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"{name}: SKIPPED ({why})" for name, why in skipped.items()]
    lines.append(f"ratio = {CANDIDATE} events/s / that contestant's events/s, median of per-round ratios "
                 "(> 1: streamml faster); events/s from first output to last; CPU while output flowed")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processor_throughput",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 events, 1 round; quix skipped without .venv-quix")
    parser.add_argument("--events", type=int, default=None, metavar="N", help="events per round (default 30,000)")
    parser.add_argument("--rounds", type=int, default=None, metavar="R", help="rounds (default 3)")
    parser.add_argument("--only", action="append", choices=sorted(CONTESTANTS), metavar="NAME",
                        help=f"run only these (repeatable; the candidate always runs): {', '.join(CONTESTANTS)}")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    events = args.events or (3000 if args.quick else 30_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if events < 100 or rounds < 1:
        parser.error("--events must be at least 100 and --rounds at least 1")
    wanted = [n for n in CONTESTANTS if n == CANDIDATE or not args.only or n in args.only]
    skipped: dict[str, str] = {}
    if any(n in QUIX for n in wanted) and quix_python(create=not args.quick) is None:
        skipped = {n: ".venv-quix is absent; run without --quick once to create it" for n in wanted if n in QUIX}
        wanted = [n for n in wanted if n not in QUIX]
    logging.getLogger("stream_processors").setLevel(logging.ERROR)
    results = run(args.bootstrap_servers, events=events, rounds=rounds, contestants=wanted)
    summary = summarize(results)
    print(format_rows(summary, skipped))
    document = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "events": events,
        "rounds": rounds, "candidate": CANDIDATE, "skipped": skipped, "environment": environment(),
        "contestants": summary,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
