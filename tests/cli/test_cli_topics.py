"""``streamml topics create|list|describe`` on the real executable: specs beside what the cluster has."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # public, re-exported without __all__

from streamml.cluster import Cluster
from streamml.config import load_settings
from streamml.topics import DEAD_LETTERS, RAW_EVENTS
from tests.cli.conftest import Runner

#: STREAMML_PARTITIONS' default, what the event topics are specified with.
PARTITIONS = 3


def _json(done: Any) -> dict[str, Any]:
    assert done.returncode == 0, done
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_list_shows_partitions_configs_and_end_offsets(run: Runner, cli_env: dict[str, str]) -> None:
    namespace = cli_env["STREAMML_NAMESPACE"]
    before = _json(run("topics", "list", "--json"))
    assert before["namespace"] == namespace
    assert before["topics"] and not any(t["exists"] for t in before["topics"])
    assert run("topics", "create").returncode == 0
    assert run("produce", "--limit", "25", "--bad-fraction", "0").returncode == 0
    listed = {t["name"]: t for t in _json(run("topics", "list", "--json"))["topics"]}
    raw = listed[namespace + RAW_EVENTS]
    assert raw["exists"] and raw["partitions"] == PARTITIONS
    # End offsets from fetch responses: all 25 records, however they were batched.
    assert raw["records"] == raw["end_offset"] == sum(raw["end_offsets"]) == 25
    assert listed[namespace + DEAD_LETTERS]["config"]["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert listed[namespace + "models.v1"]["config"] == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert listed[namespace + "models.v1"]["records"] == 0
    table = run("topics", "list")
    assert table.returncode == 0, table
    # Piped, the table is printed whole: every topic name and column on one row each.
    [raw_row] = [line for line in table.stdout.splitlines() if f"{namespace}{RAW_EVENTS} " in line]
    assert raw_row.split("│")[2].strip() == str(PARTITIONS) and raw_row.split("│")[-2].strip() == "25"
    assert "retention.ms" in table.stdout and "…" not in table.stdout


def test_create_twice_is_fine_and_describe_agrees(run: Runner, cli_env: dict[str, str]) -> None:
    first = run("topics", "create")
    assert first.returncode == 0, first
    assert all(line.startswith("created ") for line in first.stdout.splitlines())
    again = run("topics", "create")
    assert again.returncode == 0, again
    assert again.stderr_lines == []
    assert len(again.stdout.splitlines()) == 10
    assert all(line.startswith("exists ") for line in again.stdout.splitlines())
    described = _json(run("topics", "describe", "--json"))["topics"]
    assert len(described) == 10 and all(t["actual"] and t["differences"] == [] for t in described)
    table = run("topics", "describe")
    assert table.returncode == 0 and "DIFFERS" not in table.stdout and " ok " in table.stdout, table


def test_a_topic_that_differs_from_its_spec_fails_create_and_shows_in_describe(
    run: Runner, cli_env: dict[str, str]
) -> None:
    settings = load_settings(cli_env)
    raw, dlq = settings.topic(RAW_EVENTS), settings.topic(DEAD_LETTERS)
    # Made by someone else: wrong partition count, and the dead letters without their retention.
    cluster = Cluster(settings)  # held: its admin client must outlive the futures
    futures = cluster.admin.create_topics([NewTopic(raw, 5, 1), NewTopic(dlq, 1, 1)], request_timeout=10)
    for future in futures.values():
        future.result(timeout=15)
    done = run("topics", "create")
    assert done.returncode == 2, done
    assert len(done.stderr_lines) == 2
    raw_line, dlq_line = done.stderr_lines
    assert raw_line.startswith(f"streamml: error: topic {raw} differs from its spec: partitions 5 (expected 3)")
    assert dlq_line.startswith(f"streamml: error: topic {dlq} differs from its spec: retention.ms unset (expected ")
    # The other topics were still created; the differing ones left as they were.
    outcome = dict(line.split()[:2][::-1] for line in done.stdout.splitlines())
    assert outcome[raw] == outcome[dlq] == "differs"
    assert {v for k, v in outcome.items() if k not in (raw, dlq)} == {"created"}
    assert cluster.partition_counts([raw]) == {raw: 5}

    [shown] = _json(run("topics", "describe", RAW_EVENTS, "--json"))["topics"]
    assert shown["differences"] == [{"field": "partitions", "expected": "3", "actual": "5"}]
    table = run("topics", "describe", DEAD_LETTERS)
    assert table.returncode == 0, table
    [row] = [line for line in table.stdout.splitlines() if "retention.ms" in line]
    assert "DIFFERS" in row and "2592000000" in row
    # Asked again, it fails again: nothing was changed behind the user's back.
    assert run("topics", "create").returncode == 2


def test_describe_an_unknown_topic_is_one_line_with_did_you_mean(run: Runner) -> None:
    done = run("topics", "describe", "model.v1")
    assert done.returncode == 2, done
    assert len(done.stderr_lines) == 1 and "did you mean models.v1?" in done.stderr
    missing = _json(run("topics", "describe", "models.v1", "--json"))["topics"]
    assert [t["actual"] for t in missing] == [None]
    assert "MISSING" in run("topics", "describe", "models.v1").stdout
