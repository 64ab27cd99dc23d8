"""``python -m benchmarks.scaleout``: ``streamml process`` with more processes and more partitions.

Configurations (processes x partitions of the raw topic): 1 x 3 (the
reference), 2 x 3, 1 x 1 and 1 x 6. Each round runs every configuration on
a fresh namespace filled with the same N events (the order rotates from
round to round); it reports median events/s from the first output to the
last, the ratio to 1 x 3 in the same round, CPU µs per event (all
processes), and the peak RSS of each process (``VmHWM``). Two processes on
one 2-core machine that also runs the broker can at best share the cores:
read 2 x 3 as "does a second member join, split the partitions and add
throughput", not as a cluster's scaling curve.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.broker_runs import RunResult
from benchmarks.harness import broker_at
from benchmarks.pipeline_runs import Round, run_contestant
from benchmarks.report import environment

__all__ = ["CONFIGS", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scaleout.json"
#: ``(processes, partitions)``; the first is the reference of the ratios.
CONFIGS: tuple[tuple[int, int], ...] = ((1, 3), (2, 3), (1, 1), (1, 6))


def _name(config: tuple[int, int]) -> str:
    return f"{config[0]} proc x {config[1]} part"


def run(bootstrap: str | None, *, events: int, rounds: int,
        configs: Sequence[tuple[int, int]] = CONFIGS) -> dict[str, list[RunResult]]:
    """Run every configuration ``rounds`` times; results by configuration name, in round order."""
    results: dict[str, list[RunResult]] = {_name(c): [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        for index in range(rounds):
            shift = index % len(configs)
            for processes, partitions in [*configs[shift:], *configs[:shift]]:
                r = Round.prepare(servers, Path(scratch), events=events, partitions=partitions)
                result = run_contestant("streamml_process", r, processes=processes)
                results[_name((processes, partitions))].append(result)
                print(f"round {index + 1}/{rounds} {_name((processes, partitions))}: "
                      f"{result.steady_rate:,.0f} events/s", file=sys.stderr)
    return results


def summarize(results: dict[str, list[RunResult]]) -> dict[str, dict[str, Any]]:
    reference = results[next(iter(results))]
    return {
        name: {
            "events_per_s": statistics.median(r.steady_rate for r in runs),
            "ratio_to_reference": statistics.median(
                r.steady_rate / ref.steady_rate for r, ref in zip(runs, reference, strict=True)
            ),
            "events_per_s_incl_startup": statistics.median(r.total_rate for r in runs),
            "cpu_us_per_event": statistics.median(r.cpu_us_per_event for r in runs),
            "peak_rss_mb_per_process": [
                statistics.median(r.peak_rss_bytes[i] for r in runs) / 2**20 for i in range(len(runs[0].peak_rss_bytes))
            ],
            "rounds": [r.to_dict() for r in runs],
        }
        for name, runs in results.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 events, 1 round, 1 x 3 and 2 x 3 only")
    parser.add_argument("--events", type=int, default=None, metavar="N", help="events per run (default 30,000)")
    parser.add_argument("--rounds", type=int, default=None, metavar="R", help="rounds (default 3)")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    events = args.events or (3000 if args.quick else 30_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if events < 100 or rounds < 1:
        parser.error("--events must be at least 100 and --rounds at least 1")
    configs = CONFIGS[:2] if args.quick else CONFIGS
    summary = summarize(run(args.bootstrap_servers, events=events, rounds=rounds, configs=configs))
    print(f"{'configuration':<18} {'events/s':>9} {'x 1x3':>6} {'incl. start':>11} {'CPU µs/ev':>9}  peak RSS MB")
    for name, s in summary.items():
        rss = ", ".join(f"{mb:.0f}" for mb in s["peak_rss_mb_per_process"])
        print(f"{name:<18} {s['events_per_s']:>9,.0f} {s['ratio_to_reference']:>6.2f} "
              f"{s['events_per_s_incl_startup']:>11,.0f} {s['cpu_us_per_event']:>9.1f}  {rss}")
    print("x 1x3 = events/s / events/s of 1 process x 3 partitions in the same round (median over rounds)")
    document = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "events": events,
                "rounds": rounds, "environment": environment(), "configurations": summary}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
