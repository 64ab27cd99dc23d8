"""``streamml produce`` is safe to re-run: it says what was sent before a bad row, and can skip,
dead-letter, dry-run and resume."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from producers import SyntheticSource
from producers.rejections import FILE_HEADER, ROW_HEADER
from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.errors import RecordError
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml.records import DEMO_EVENTS_SCHEMA, DeadLetterReason
from streamml.serde import AvroSerde, bundled_schema, header_value
from tests.cli.conftest import Runner

pytestmark = pytest.mark.integration

ROWS = 300
BAD_ROW = 202
SCHEMA = bundled_schema(DEMO_EVENTS_SCHEMA)
CLOCK = lambda: 1_700_000_000.0  # noqa: E731 - fixed event times


def write_csv(path: Path, *, bad: bool) -> list[str]:
    """Write ``ROWS`` rows of the demo schema (row ``BAD_ROW``'s salary 'abc' if ``bad``); return their ids."""
    records = [r for r in SyntheticSource(ROWS, seed=5, clock=CLOCK) if isinstance(r, Mapping)]
    names = SCHEMA.field_names
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        for number, record in enumerate(records, start=1):
            row = {n: ("" if record[n] is None else record[n]) for n in names}
            if bad and number == BAD_ROW:
                row["salary"] = "abc"
            writer.writerow(row)
    return [str(r["event_id"]) for r in records]


def settings_of(cli_env: dict[str, str]) -> Settings:
    return load_settings(
        env={},
        bootstrap_servers=cli_env["STREAMML_BOOTSTRAP_SERVERS"],
        namespace=cli_env["STREAMML_NAMESPACE"],
    )


def ids_on(cluster: Cluster, topic: str) -> list[str]:
    serde = AvroSerde(SCHEMA)
    return [str(serde.decode(m.value(), record_headers(m))["event_id"]) for m in read_to_end(cluster, topic)]


@pytest.fixture
def cluster(run: Runner, cli_env: dict[str, str]) -> Cluster:
    created = run("topics", "create")
    assert created.returncode == 0, created
    return Cluster(settings_of(cli_env))


def test_stop_says_what_was_sent_and_resume_sends_exactly_the_rest(
    run: Runner, cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    ids = write_csv(path, bad=True)
    stopped = run("produce", "--source", str(path))
    assert stopped.returncode == RecordError.exit_code == 1, stopped
    assert stopped.stderr_lines == [
        f"streamml: error: row {BAD_ROW}, field 'salary': 'abc' is not a double; "
        f"rows 1-{BAD_ROW - 1} were sent and acknowledged; "
        "fix the row and rerun with --resume (or --on-error skip|deadletter)"
    ]
    raw = cluster.topics.raw_events
    assert sorted(ids_on(cluster, raw)) == sorted(ids[: BAD_ROW - 1])

    write_csv(path, bad=False)
    resumed = run("produce", "--source", str(path), "--resume")
    assert resumed.returncode == 0, resumed
    assert f"; {BAD_ROW - 1} rows already on the topic, not sent again" in resumed.stdout
    assert resumed.stdout.startswith(f"{ROWS - BAD_ROW + 1} events sent to {raw}, {ROWS - BAD_ROW + 1} delivered")
    counts = Counter(ids_on(cluster, raw))
    assert set(counts) == set(ids) and set(counts.values()) == {1}

    again = run("produce", "--source", str(path), "--resume")  # nothing left to send
    assert again.returncode == 0, again
    assert again.stdout.startswith(f"0 events sent to {raw}")
    assert Counter(ids_on(cluster, raw)) == counts


def test_skip_sends_the_other_rows_and_names_the_skipped_one(run: Runner, cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    ids = write_csv(path, bad=True)
    skipped = run("produce", "--source", str(path), "--on-error", "skip")
    assert skipped.returncode == 0, skipped
    assert skipped.stderr_lines == [
        f"skipped row {BAD_ROW}, field 'salary': 'abc' is not a double [coercion]",
        "skipped 1 row that do not fit the schema",
    ]
    assert "; 1 bad rows skipped" in skipped.stdout
    assert sorted(ids_on(cluster, cluster.topics.raw_events)) == sorted(ids[: BAD_ROW - 1] + ids[BAD_ROW:])


def test_deadletter_puts_the_row_on_the_dead_letter_topic_with_its_reason(
    run: Runner, cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    ids = write_csv(path, bad=True)
    result = run("produce", "--source", str(path), "--on-error", "deadletter")
    assert result.returncode == 0, result
    assert f"; 1 bad rows sent to {cluster.topics.dead_letters}, 1 delivered" in result.stdout
    assert len(ids_on(cluster, cluster.topics.raw_events)) == ROWS - 1

    [letter] = list(read_to_end(cluster, cluster.topics.dead_letters))
    headers = record_headers(letter)
    reason = DeadLetterReason.read(headers)
    assert (reason["stage"], reason["rule"], reason["field"]) == ("ingest", "coercion", "salary")
    assert reason["message"] == f"row {BAD_ROW}, field 'salary': 'abc' is not a double"
    assert header_value(headers, FILE_HEADER) == str(path).encode()
    assert header_value(headers, ROW_HEADER) == str(BAD_ROW).encode()
    row = json.loads(letter.value())
    assert (row["event_id"], row["salary"]) == (ids[BAD_ROW - 1], "abc")

    listed = run("deadletters", "--json")
    assert listed.returncode == 0, listed
    [rule] = json.loads(listed.stdout)["rules"]
    assert (rule["stage"], rule["rule"], rule["count"]) == ("ingest", "coercion", 1)


def test_dry_run_sends_nothing_and_needs_no_broker(
    run: Runner, cluster: Cluster, tmp_path: Path, unused_port: int
) -> None:
    path = tmp_path / "events.csv"
    write_csv(path, bad=True)
    dead = {"STREAMML_BOOTSTRAP_SERVERS": f"127.0.0.1:{unused_port}"}
    failed = run("produce", "--source", str(path), "--dry-run", env=dead, timeout=30)
    assert failed.returncode == 2, failed
    assert failed.stdout.startswith(f"dry run of csv({path}): {ROWS} rows read, 1 do not (1 coercion)")
    assert f"  row {BAD_ROW}, field 'salary': 'abc' is not a double [coercion]" in failed.stdout.splitlines()
    assert failed.stderr_lines == [
        f"streamml: error: dry run: 1 of {ROWS} rows do not fit schema streamml.demo.LoanApplication "
        f"(first: row {BAD_ROW}, field 'salary': 'abc' is not a double [coercion]); nothing was sent"
    ]
    assert failed.seconds < 20

    write_csv(path, bad=False)
    passed = run("produce", "--source", str(path), "--dry-run", env=dead, timeout=30)
    assert passed.returncode == 0, passed
    assert passed.stdout.startswith(f"dry run of csv({path}): {ROWS} rows read, all fit;")
    assert passed.stderr == ""
    assert ids_on(cluster, cluster.topics.raw_events) == []


def test_resume_options_are_checked_before_connecting(run: Runner, tmp_path: Path, unused_port: int) -> None:
    path = tmp_path / "events.csv"
    write_csv(path, bad=False)
    dead = {"STREAMML_BOOTSTRAP_SERVERS": f"127.0.0.1:{unused_port}"}
    for args, message in [
        (("--resume", "--id-column", "nope"), "--id-column 'nope': schema streamml.demo.LoanApplication has no such"),
        (("--id-column", "event_id"), "--id-column applies to --resume only"),
        (("--dry-run", "--resume"), "--dry-run does not connect to the broker, so it cannot --resume"),
    ]:
        result = run("produce", "--source", str(path), *args, env=dead, timeout=30)
        assert result.returncode == 2, result
        [line] = result.stderr_lines
        assert line.startswith(f"streamml: error: {message}"), result
