"""``streamml demo`` as a new user runs it without a terminal (output to a pipe): it must end, every time.

Issue 9 saw one default run in four stop updating 8 s in and never finish with
its output redirected. Each run here is bounded by a timeout; it must exit 0
with its checks printed, its own embedded broker started and stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")
RUNS = 2


@pytest.mark.parametrize("run", range(RUNS))
def test_the_demo_ends_without_a_terminal(run: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env["STREAMML_HOME"] = str(tmp_path / "home")  # a first run: the key pair is created
    result = subprocess.run(
        [str(STREAMML), "demo", "--events", "1500", "--rate", "0", "--seed", str(run + 1)],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "✓ every event is in features or dead letters" in result.stdout
    assert "✗" not in result.stdout
    assert "Traceback" not in result.stderr
