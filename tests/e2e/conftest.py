"""The end-to-end tier: a real pipeline on the session broker, looked at from outside (a browser, HTTP).

Tests here need the session broker (``bootstrap_servers`` of ``tests/conftest.py``)
and, for the dashboard, Debian's ``chromium`` (``make test`` installs it when
absent). A missing browser fails the test with the command that installs it:
this tier never skips in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser's executable; fails (never skips) when it is not installed."""
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not found:
        pytest.fail(
            "chromium is not installed: run 'make test' (it installs it) or "
            "'apt-get install -y chromium' (Debian's package), then run the test again",
            pytrace=False,
        )
    return str(found)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at: ``$STREAMML_TEST_ARTIFACTS`` or ``artifacts/`` (gitignored)."""
    directory = Path(os.environ.get("STREAMML_TEST_ARTIFACTS") or ROOT / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory
