"""``python -m benchmarks``: run the benchmarks, print a table, write JSON.

Examples::

    python -m benchmarks                       # every benchmark, full scale
    python -m benchmarks --quick               # a smoke run of a few seconds
    python -m benchmarks --only serde_decode --json /tmp/serde.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks.cases import CASES, FULL, QUICK, Scale
from benchmarks.harness import Measurement, measure
from benchmarks.report import format_table, to_json, write_json

__all__ = ["DEFAULT_JSON", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def run(names: Sequence[str], scale: Scale) -> dict[str, Measurement]:
    """Build and measure each named case in order, reporting progress on stderr."""
    results = {}
    for name in names:
        started = time.perf_counter()
        print(f"{name}: ", end="", file=sys.stderr, flush=True)
        pair = CASES[name].build(scale)
        results[name] = measure(pair, rounds=scale.rounds, sample_seconds=scale.sample_seconds)
        print(f"ratio {results[name].ratio:.3f} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure streamml hot paths against a baseline in the same run, interleaved.",
    )
    parser.add_argument("--quick", action="store_true", help="small inputs, 3 short rounds: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CASES),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write results (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds per benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for case in CASES.values():
            print(f"{case.name:<20} {case.summary}")
        return 0
    scale = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        scale = replace(scale, rounds=args.rounds)
    names = [name for name in CASES if name in set(args.only)] if args.only else list(CASES)
    # The workloads quarantine events and drift on purpose: their warnings are not results.
    logging.getLogger("stream_processors").setLevel(logging.ERROR)
    results = run(names, scale)
    print(format_table(results))
    write_json(to_json(results, quick=args.quick, rounds=scale.rounds, sample_seconds=scale.sample_seconds), args.json)
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
