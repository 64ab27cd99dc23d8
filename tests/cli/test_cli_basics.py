"""The CLI tier's own sanity: the executable runs, and the runner reports what it ran."""

from __future__ import annotations

from tests.cli.conftest import Runner


def test_help_lists_the_commands(run: Runner) -> None:
    done = run("--help")
    assert done.returncode == 0, done
    for command in ("produce", "process", "learn", "serve", "lag", "topics"):
        assert command in done.stdout


def test_unknown_command_is_a_usage_error(run: Runner) -> None:
    done = run("no-such-command")
    assert done.returncode == 2, done
    assert "no-such-command" in done.stderr
