"""Every command that needs the broker, against an address nothing listens on.

Each must return within STREAMML_CONNECT_TIMEOUT_SECONDS (plus start-up) with
exit 3 and exactly one stderr line carrying the hint, and never print
librdkafka's own log lines (before, `score` and `serve` printed 879 lines in
20 s and never exited).
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import Runner

#: The bound the test sets, and what start-up (imports) may add to it here.
CONNECT_TIMEOUT = 3
MARGIN = 12

COMMANDS = [
    ("learn",),
    ("score",),
    ("serve", "--port", "0"),
    ("process",),
    ("produce", "--source", "synthetic", "--limit", "5"),
    ("models", "list"),
    ("models", "show", "demo-classifier", "1"),
    ("models", "pin", "demo-classifier", "1"),
    ("lag",),
    ("drift",),
    ("deadletters",),
    ("deadletters", "replay", "--dry-run"),
    ("topics", "list"),
    ("topics", "create"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_an_unreachable_broker_is_one_line_exit_3_within_the_bound(
    run: Runner, unused_port: int, args: tuple[str, ...]
) -> None:
    done = run(
        *args,
        env={"STREAMML_BOOTSTRAP_SERVERS": f"127.0.0.1:{unused_port}", "STREAMML_CONNECT_TIMEOUT_SECONDS": "3"},
        timeout=CONNECT_TIMEOUT + MARGIN + 30,
    )
    assert done.returncode == 3, done
    assert len(done.stderr_lines) == 1, done
    line = done.stderr_lines[0]
    assert line.startswith("streamml: error: no Kafka broker answered at 127.0.0.1:") and "within 3s" in line, done
    assert "STREAMML_BOOTSTRAP_SERVERS" in line
    assert "%3|" not in done.stdout + done.stderr  # no librdkafka log line
    assert done.seconds < CONNECT_TIMEOUT + MARGIN, done
