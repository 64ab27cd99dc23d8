"""``--metrics-port`` on process, learn and score: bound before any broker work, a taken port is exit 2."""

from __future__ import annotations

import socket

import pytest

from streamml_cli import main


@pytest.mark.parametrize("command", ["process", "learn", "score"])
def test_a_taken_metrics_port_is_one_line_and_exit_2_before_the_broker_is_asked(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMML_CONNECT_TIMEOUT_SECONDS", "0.5")  # were the broker asked, this would be exit 3
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main([command, "-b", "127.0.0.1:1", "--metrics-port", str(port)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"streamml: error: metrics port {port} on 127.0.0.1 is already in use; "
        "choose another with --metrics-port or STREAMML_METRICS_PORT"
    )


def test_the_option_is_documented_on_each_command() -> None:
    from click.testing import CliRunner

    from streamml_cli import cli

    for command in ("process", "learn", "score"):
        shown = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--metrics-port PORT" in shown and "STREAMML_METRICS_PORT" in shown, command
