"""The two outputs of a run: a table for people and a JSON file for tools.

The JSON holds, per benchmark, both sides' median ops/s and every round's
rate, the median ratio with its range over rounds, plus what the run was on
(Python, libraries, CPU count), since absolute rates only compare within
one machine and one run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import Measurement

__all__ = ["environment", "to_json", "write_json", "format_table"]

_PACKAGES = ("fastavro", "river", "faust-streaming")


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def to_json(results: Mapping[str, Measurement], *, quick: bool, rounds: int, sample_seconds: float) -> dict[str, Any]:
    """The JSON document of a run (``ratio`` = candidate ops/s / baseline ops/s)."""
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": quick,
        "rounds": rounds,
        "sample_seconds": sample_seconds,
        "ratio_definition": "candidate ops/s / baseline ops/s, median of per-round ratios",
        "environment": environment(),
        "benchmarks": {name: m.to_dict() for name, m in results.items()},
    }


def write_json(document: Mapping[str, Any], path: Path) -> None:
    """Write ``document`` to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def format_table(results: Mapping[str, Measurement]) -> str:
    """One line per benchmark: both sides' median ops/s and the ratio with its range."""
    header = ("benchmark", "baseline", "ops/s", "candidate", "ops/s", "ratio", "range")
    rows = [header]
    for name, m in results.items():
        rows.append(
            (
                name,
                m.baseline.label,
                _rate(m.baseline.median),
                m.candidate.label,
                _rate(m.candidate.median),
                f"{m.ratio:.3f}",
                f"{min(m.ratios):.2f}-{max(m.ratios):.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {2, 4, 5, 6}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("ratio = candidate ops/s / baseline ops/s (median of interleaved rounds; > 1: candidate faster)")
    return "\n".join(lines)
