"""``streamml broker``: what started a broker can stop it on any port; a taken port is one line, exit 2."""

from __future__ import annotations

import json
import socket

import pytest

from tests.cli.conftest import Runner


def test_stop_without_port_finds_the_broker_started_on_another_port(run: Runner, unused_port: int) -> None:
    started = run("broker", "start", "--port", str(unused_port))
    try:
        assert started.returncode == 0, started
        assert f"streamml broker stop --port {unused_port}" in started.stdout
        assert f"export STREAMML_BOOTSTRAP_SERVERS=127.0.0.1:{unused_port}" in started.stdout

        status = run("broker", "status", "--json")
        assert status.returncode == 0, status
        states = [json.loads(line) for line in status.stdout.splitlines()]
        assert [(s["port"], s["running"]) for s in states] == [(unused_port, True)]
    finally:
        stopped = run("broker", "stop")  # no --port: the recorded state says which
    assert stopped.returncode == 0, stopped
    assert stopped.stdout.strip() == f"broker on port {unused_port} stopped"

    after = run("broker", "status")
    assert after.returncode == 1, after
    assert "no embedded broker of ours runs" in after.stdout
    with socket.socket() as probe:  # the port is free again: the process is gone
        probe.bind(("127.0.0.1", unused_port))


def test_stop_with_nothing_started_says_so(run: Runner) -> None:
    done = run("broker", "stop")
    assert done.returncode == 0, done
    assert "no embedded broker of ours runs" in done.stdout


def test_a_taken_port_is_one_line_and_exit_2(run: Runner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("broker", "start", "--port", str(port), timeout=30)
    assert done.returncode == 2, done
    assert len(done.stderr_lines) == 1 and f"port {port}" in done.stderr and "already in use" in done.stderr


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("postgres://tansu:secret@localhost/tansu", "no PostgreSQL engine"),  # listed in tansu --help, not built in
        ("s3://key:secret@bucket/", "is not s3://BUCKET/"),
        ("s3:///", "is not s3://BUCKET/"),
        ("file:///tmp/tansu", "is no storage engine"),
    ],
)
def test_a_storage_it_cannot_use_is_one_line_and_exit_2(run: Runner, unused_port: int, storage: str, says: str) -> None:
    done = run("broker", "start", "--port", str(unused_port), "--storage", storage)
    assert done.returncode == 2, done
    assert len(done.stderr_lines) == 1 and says in done.stderr, done
    assert "secret" not in done.stderr  # credentials in a URL are never echoed
    with socket.socket() as probe:  # nothing was started
        probe.bind(("127.0.0.1", unused_port))


def test_status_reports_the_storage_it_was_started_with(run: Runner, unused_port: int) -> None:
    started = run("broker", "start", "--port", str(unused_port), "--storage", "memory://")
    try:
        assert started.returncode == 0, started
        status = run("broker", "status", "--port", str(unused_port), "--json")
        assert status.returncode == 0, status
        assert json.loads(status.stdout)["storage"] == "memory://tansu/"
    finally:
        run("broker", "stop", "--port", str(unused_port))
