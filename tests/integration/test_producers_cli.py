"""``streamml produce`` run as a real process against the test broker, without a TTY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.records import DEMO_EVENTS_SCHEMA
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Topics

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).parent / "streamml"


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    # The test's own settings go in as flags; no STREAMML_* variable of the
    # caller's shell may leak in and change them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return subprocess.run(
        [str(STREAMML), "produce", "-b", settings.bootstrap_servers, "--namespace", settings.namespace, *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120,
    )


def test_produce_synthetic_prints_one_summary_line(settings: Settings, topics: Topics) -> None:
    result = run_cli(settings, "--source", "synthetic", "--limit", "200", "--bad-fraction", "0.05", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert line.startswith(f"200 events sent to {topics.raw_events}, 200 delivered, ")
    assert "deliberately bad" in line
    assert len(list(read_to_end(Cluster(settings), topics.raw_events))) == 200


def test_a_bad_csv_row_is_one_error_line_naming_row_and_field(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "event_id,customer_id,event_time,age\n"
        "e1,c1,1700000000000,30\n"
        "e2,c2,1700000000001,31\n"
        "e3,c3,1700000000002,abc\n"
        "e4,c4,1700000000003,33\n"
    )
    result = run_cli(settings, "--source", str(path), "--topic", topics.features)
    assert result.returncode == 1
    assert result.stderr == (
        "streamml: error: row 3, field 'age': 'abc' is not an int; rows 1-2 were sent and acknowledged; "
        "fix the row and rerun with --resume (or --on-error skip|deadletter)\n"
    )
    # The rows before the bad one were delivered, not lost.
    serde = AvroSerde(bundled_schema(DEMO_EVENTS_SCHEMA))
    features = read_to_end(Cluster(settings), topics.features)
    got = sorted(serde.decode(m.value(), m.headers())["event_id"] for m in features)
    assert got == ["e1", "e2"]


def test_unknown_source_and_missing_topic_are_one_line_errors(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(settings, "--source", "events.xlsx")
    assert result.returncode == 1
    assert result.stderr.startswith("streamml: error: unknown source 'events.xlsx': expected 'synthetic' or")
    assert len(result.stderr.splitlines()) == 1

    result = run_cli(settings, "--limit", "5")  # this namespace has no topics: a setup error
    assert result.returncode == 2
    assert result.stderr == (
        f"streamml: error: topic {settings.namespace}events.raw.v1 not found on {settings.bootstrap_servers}; "
        "create the pipeline's topics with 'streamml topics create' (same STREAMML_NAMESPACE)\n"
    )

    result = run_cli(settings, "--limit", "5", "--on-error", "deadletter")  # both topics named at once
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"streamml: error: topics {settings.namespace}events.raw.v1, {settings.namespace}events.raw.v1.dlq not found"
    )
