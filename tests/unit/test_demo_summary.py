"""The demo's summary: producing time apart from the whole run, and no ``vNone`` before a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from streamml_cli.demo import _summary
from streamml_cli.orchestration.demo import DemoResult
from streamml_cli.orchestration.monitor import PipelineSnapshot


def _result(*, sdk_version: int | None, producing: float | None) -> DemoResult:
    return DemoResult(
        snapshot=PipelineSnapshot(produced=4_000, features=3_920, quarantined=80),
        lag=[],
        sdk_version=sdk_version,
        sdk_swaps=0,
        sdk_refused=0,
        elapsed=41.5,
        bootstrap_servers="127.0.0.1:9092",
        producing_seconds=producing,
        run_dir=Path("/tmp/run"),
        exit_codes={},
        checks={},
    )


def _render(result: DemoResult) -> str:
    console = Console(record=True, width=200)
    _summary(result, console)
    return console.export_text()


def test_producing_time_is_the_producers_not_the_whole_runs() -> None:
    text = _render(_result(sdk_version=3, producing=12.25))
    assert "4,000 in 12.2s" in text
    assert "whole run" in text and "41.5s" in text
    assert "v3, 0 swaps" in text


def test_no_model_yet_is_said_in_words() -> None:
    text = _render(_result(sdk_version=None, producing=None))
    assert "vNone" not in text
    assert "no model yet" in text


def test_publish_to_first_prediction_is_shown_per_version_and_a_version_never_used_says_so() -> None:
    from collections import Counter

    from streamml_cli.orchestration.monitor import ModelVersionSeen

    result = _result(sdk_version=2, producing=10.0)
    snapshot = result.snapshot
    snapshot.versions = [ModelVersionSeen(1, 1_000_000, 1, 1.0, 1.0), ModelVersionSeen(2, 1_002_000, 2001, 1.0, 1.0)]
    snapshot.versions_scored = Counter({1: 10, 2: 5})
    snapshot.first_scored_at = {1: 1_000_400, 2: 1_002_030}
    text = _render(result)
    row = next(line for line in text.splitlines() if "first prediction after v1 published" in line)
    assert "0.4 s" in row
    assert "median 0.4 s, max 0.4 s over the 2 versions" in text and "30 ms" in text
    assert snapshot.first_prediction_after(2) == pytest.approx(0.03)

    del snapshot.first_scored_at[1]
    assert "it made no prediction" in _render(result)
