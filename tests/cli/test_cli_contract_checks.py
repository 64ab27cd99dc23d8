"""``streamml process``: a broken schema stops it at once; a running one says what it does.

The first test needs no broker (the schema is checked before anything
connects); the second runs the processor against the session broker and reads
its output as a user would.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.cli.conftest import STREAMML, Runner

#: A schema with one mistake of each kind the start-up checks catch.
BROKEN = {
    "type": "record",
    "name": "Mine",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double", "contract": {"min": 10, "max": 5}},
        {"name": "kind", "type": "int", "contract": {"allowed": "abc"}},
        {"name": "city", "type": "string", "contract": {"max_null_rate": 2}},
    ],
}


def test_a_broken_schema_is_one_line_per_problem_exit_2_before_any_broker(run: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text(json.dumps(BROKEN))
    # Nothing listens there: the checks must come before any connection (which would take 10 s to fail).
    done = run("process", "--schema", str(bad), env={"STREAMML_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=30)
    assert done.returncode == 2, done
    assert done.seconds < 8, done
    assert done.stderr_lines == [
        f"streamml: error: schema {bad} has 7 problems:",
        "  field 'amount': contract min 10 is above max 5: no value can pass",
        "  field 'kind': contract 'allowed' must be a non-empty list of int values, got 'abc'",
        "  field 'city': contract 'max_null_rate' must be a number from 0 to 1, got 2",
        "  key field 'customer_id' (STREAMML_KEY_FIELD) is not in the schema; fields: id, amount, kind, city",
        "  event-time field 'event_time' (STREAMML_TIME_FIELD) is not in the schema; fields: id, amount, kind, city",
        "  label field 'label' (STREAMML_LABEL_FIELD, in the events: STREAMML_LABEL_MODE=inline) is not in the "
        "schema; fields: id, amount, kind, city",
        "  window field 'loan' (STREAMML_WINDOW_FIELDS, empty for none) is not in the schema; fields: id, amount, "
        "kind, city",
    ], done
    assert done.stdout == ""


class Lines:
    """A running command's stdout, line by line, read by a thread so a test can wait with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)  # end of output

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line (seen before or arriving within ``timeout`` s) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            for line in self.seen[index:]:
                if found := re.search(pattern, line):
                    return found
            index = len(self.seen)
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.001))
            except queue.Empty:
                line = None
            if line is None:
                shown = "\n".join(self.seen)
                raise AssertionError(f"no line matching {pattern!r} within {timeout:g}s; stdout:\n{shown}")
            self.seen.append(line)

    def rest(self, timeout: float) -> list[str]:
        """Every line, once the output has ended (the process exited)."""
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.seen.append(line)
        return self.seen


#: A log line of the CLI's format whose logger is one of the libraries the processor quiets.
LIBRARY_LINE = re.compile(r"^\S+ \S+ [A-Z]+ (faust|mode|aiokafka|kafka)[.:]")


@pytest.mark.parametrize("log_level", [None, "INFO"], ids=["default-level", "info"])
def test_process_prints_a_start_line_then_counts_and_final_counts(
    run: Runner, cli_env: dict[str, str], tmp_path: Path, log_level: str | None
) -> None:
    """At the default level, and at INFO (where faust alone used to print 85 lines of its internals)."""
    if log_level is not None:
        cli_env = {**cli_env, "STREAMML_LOG_LEVEL": log_level}
    assert run("topics", "create").returncode == 0
    namespace = cli_env["STREAMML_NAMESPACE"]
    stderr_path = tmp_path / "process.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [STREAMML, "process", "--report-every", "1"],
            env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    try:
        lines = Lines(process)
        start = lines.wait_for(r"^processing (\S+) -> (\S+) .*; group (\S+);", timeout=60)
        names = ("events.raw.v1", "features.v1", "streamml.processor")
        assert start.groups() == tuple(f"{namespace}{name}" for name in names)
        lines.wait_for(r"^features: salary, commission, .* \| not features: event_id \(event id\)", timeout=5)
        produced = run("produce", "-n", "60", "--bad-fraction", "0.25", "--seed", "7")
        assert produced.returncode == 0, produced
        counts = lines.wait_for(r"^consumed 60, featurized (\d+), quarantined (\d+) \((.+)\)(, lag 0)?$", timeout=90)
        featurized, quarantined = int(counts[1]), int(counts[2])
        assert featurized + quarantined == 60 and quarantined > 0
        by_rule = dict(item.rsplit(" ", 1) for item in counts[3].split(", "))
        assert sum(map(int, by_rule.values())) == quarantined, by_rule
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    errors = stderr_path.read_text()
    assert process.returncode == 0, errors
    final = [line for line in lines.rest(timeout=10) if line.startswith("stopped: ")]
    assert len(final) == 1 and final[0].startswith(
        f"stopped: consumed 60, featurized {featurized}, quarantined {quarantined} ({counts[3]})"
    ), lines.seen
    # At the default log level faust's, mode's and aiokafka's internals stay out, and so do terminal escapes.
    assert not [line for line in errors.splitlines() if LIBRARY_LINE.match(line)], errors
    assert "\x1b" not in errors and not any("\x1b" in line for line in lines.seen), lines.seen
