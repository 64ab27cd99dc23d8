"""The benchmark harness runs end to end and writes the JSON it promises (no timing asserted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.__main__ import main
from benchmarks.broker_runs import ChildStats, RunResult, child_stats
from benchmarks.cases import CASES
from benchmarks.harness import Pair, measure
from benchmarks.processor_throughput import CANDIDATE, format_rows, summarize

SIDE_KEYS = {"label", "ops_per_s", "calls_per_round", "rounds_ops_per_s"}
RESULT_KEYS = {"unit", "baseline", "candidate", "ratio", "ratio_min", "ratio_max", "rounds"}


def test_quick_run_writes_both_sides_and_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nested" / "bench.json"
    assert main(["--quick", "--only", "serde_decode", "--only", "subscriber_predict", "--json", str(out)]) == 0

    document = json.loads(out.read_text())
    assert document["quick"] is True
    assert {"python", "cpu_count", "packages"} <= set(document["environment"])
    assert list(document["benchmarks"]) == ["serde_decode", "subscriber_predict"]  # registry order
    for result in document["benchmarks"].values():
        assert set(result) == RESULT_KEYS
        assert result["rounds"] == 3
        for side in ("baseline", "candidate"):
            assert set(result[side]) == SIDE_KEYS
            assert result[side]["ops_per_s"] > 0
            assert len(result[side]["rounds_ops_per_s"]) == 3
        assert result["ratio"] > 0
    table = capsys.readouterr().out
    assert "serde_decode" in table and "AvroSerde.decode" in table and "learner_step" not in table


def test_rounds_alternate_and_count_the_work() -> None:
    calls: list[str] = []

    def side(name: str) -> Callable[[], int]:
        def work() -> int:
            calls.append(name)
            return 10

        return work

    pair = Pair(side("b"), side("c"), "base", "cand", "op")
    measurement = measure(pair, rounds=4, sample_seconds=0.0)

    timed = calls[4:]  # after two calibration calls per side, one call per sample
    assert timed == ["b", "c", "c", "b", "b", "c", "c", "b"]
    assert len(measurement.ratios) == 4 and measurement.baseline.calls_per_round == 1


def test_unknown_benchmark_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_every_case_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in CASES)


# --- Broker benchmarks: processor end to end, scale-out, producer (benchmarks.processor_throughput & co.) ---


def _run(rate: float, cpu_s: float, *, events: int = 1000) -> RunResult:
    """A run whose output took ``events / rate`` seconds after 2 s of start-up."""
    return RunResult(
        events=events, quiet_s=2.0, first_output_s=2.01, last_output_s=2.0 + events / rate,
        steady_cpu_s=cpu_s, total_cpu_s=cpu_s + 1.0, peak_rss_bytes=(50 * 2**20,), counts={"out": events},
    )


def test_processor_summary_is_candidate_over_baseline_per_round_and_names_what_was_skipped() -> None:
    results = {
        CANDIDATE: [_run(1000, 0.2), _run(2000, 0.2)],
        "confluent_forward": [_run(4000, 0.01), _run(4000, 0.01)],
    }
    summary = summarize(results)

    assert summary[CANDIDATE]["ratio"] == 1.0
    assert summary["confluent_forward"]["ratio"] == pytest.approx(0.375)  # median of 0.25 and 0.5
    assert summary[CANDIDATE]["cpu_us_per_event"] == pytest.approx(200.0)
    assert summary["confluent_forward"]["peak_rss_mb"] == 50
    table = format_rows(summary, {"quix_work": ".venv-quix is absent"})
    assert "confluent_forward" in table and "0.375" in table
    assert "quix_work: SKIPPED (.venv-quix is absent)" in table  # never silently


def test_child_stats_reads_cpu_and_peak_rss_from_proc() -> None:
    import os

    mine = child_stats(os.getpid())
    assert mine.cpu_seconds > 0 and mine.peak_rss_bytes > 10 * 2**20
    assert child_stats(2**22 + 1) == ChildStats(0.0, 0)  # above pid_max: no such process
