"""Measure a candidate against its baseline, interleaved, in the same run.

A benchmark is a :class:`Pair` of callables. Each call does one fixed unit of
work (for example "encode these 1,000 events") and returns how many operations
it performed. :func:`measure` calibrates how many calls per side make a round
of about ``sample_seconds`` per side, then runs ``rounds`` rounds. Within a
round the two sides alternate call by call (which goes first alternates too)
and each call is timed on its own, so a burst from another process or a change
of CPU frequency lands on both sides alike instead of on one sample. The
reported rates are medians over rounds, and the ratio is the median of the
per-round ratios: each compares two rates measured over the same stretch of
time, which is what keeps it stable on a noisy machine where absolute rates
are not.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Work", "Pair", "Side", "Measurement", "measure", "broker_at"]


@contextlib.contextmanager
def broker_at(bootstrap: str | None, home: Path) -> Iterator[str]:
    """Yield ``bootstrap``, or, when it is ``None``, the address of an embedded broker started under ``home``."""
    if bootstrap is not None:
        yield bootstrap
        return
    from streamml.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(port=free_port(), home=home / "broker")
    broker.start(timeout=30)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()

#: One unit of work; returns the number of operations it performed.
Work = Callable[[], int]


@dataclass(frozen=True)
class Pair:
    """The two sides of a benchmark and what each one is."""

    baseline: Work
    candidate: Work
    baseline_label: str
    candidate_label: str
    #: What one operation is, for the table ("event", "record", "prediction").
    unit: str


@dataclass(frozen=True)
class Side:
    """Samples of one side: operations per second in each round."""

    label: str
    calls_per_round: int
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ops_per_s": self.median,
            "calls_per_round": self.calls_per_round,
            "rounds_ops_per_s": list(self.rates),
        }


@dataclass(frozen=True)
class Measurement:
    """Both sides of one benchmark, measured in the same rounds."""

    baseline: Side
    candidate: Side
    unit: str

    @property
    def ratios(self) -> tuple[float, ...]:
        """Candidate rate over baseline rate, per round (> 1: the candidate is faster)."""
        return tuple(c / b for b, c in zip(self.baseline.rates, self.candidate.rates, strict=True))

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "ratio": self.ratio,
            "ratio_min": min(self.ratios),
            "ratio_max": max(self.ratios),
            "rounds": len(self.ratios),
        }


def _calibrate(pair: Pair, sample_seconds: float) -> int:
    """Return how many calls per side make a round of about ``2 * sample_seconds`` (first calls warm up)."""
    pair.baseline()
    pair.candidate()
    spent = 0.0
    for work in (pair.baseline, pair.candidate):
        start = time.perf_counter()
        work()
        spent += time.perf_counter() - start
    return max(1, math.ceil(2 * sample_seconds / max(spent, 1e-9)))


def _round(pair: Pair, calls: int, first: int) -> tuple[float, float]:
    """Alternate ``calls`` calls of each side, timing each call; return both rates (ops/s)."""
    gc.collect()  # garbage left by the previous round is not this round's cost
    works = (pair.baseline, pair.candidate)
    ops = [0, 0]
    seconds = [0.0, 0.0]
    clock = time.perf_counter
    for index in range(calls):
        for side in ((0, 1) if (first + index) % 2 == 0 else (1, 0)):
            start = clock()
            ops[side] += works[side]()
            seconds[side] += clock() - start
    rates = [o / s if s > 0 else math.inf for o, s in zip(ops, seconds, strict=True)]
    return rates[0], rates[1]


def measure(pair: Pair, *, rounds: int, sample_seconds: float) -> Measurement:
    """Measure ``pair`` over ``rounds`` rounds of about ``sample_seconds`` per side."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    calls = _calibrate(pair, sample_seconds)
    results = [_round(pair, calls, first=index) for index in range(rounds)]
    return Measurement(
        baseline=Side(pair.baseline_label, calls, tuple(b for b, _ in results)),
        candidate=Side(pair.candidate_label, calls, tuple(c for _, c in results)),
        unit=pair.unit,
    )
