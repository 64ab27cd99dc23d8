"""The demo's summary: producing time apart from the whole run, and no ``vNone`` before a model."""

from __future__ import annotations

from pathlib import Path

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
