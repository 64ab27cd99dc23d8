"""The CLI tier: the real ``streamml`` executable, run as a subprocess.

Each test gets a clean environment (no ``STREAMML_*`` from the caller), its
own ``STREAMML_HOME`` and namespace, and the session broker of
``tests/conftest.py``. :func:`run` measures how long a command took, so a test
can check that a failing command returns within its bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

#: The console script of the environment the tests run in.
STREAMML = str(Path(sys.executable).with_name("streamml"))


@dataclass(frozen=True)
class Run:
    """One finished command: exit code, output and how long it took."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        """Non-empty stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __str__(self) -> str:  # shown when an assertion on a run fails
        return (
            f"streamml {' '.join(self.args)} -> {self.returncode} in {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


Runner = Callable[..., Run]


@pytest.fixture
def cli_env(tmp_path: Path, bootstrap_servers: str, model_keys: tuple[Path, Path]) -> dict[str, str]:
    """Environment of one test's commands: the session broker, a unique namespace, signed models."""
    private, public = model_keys
    # No COLUMNS either: output goes to a pipe, as in `streamml ... | grep`.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_") and k != "COLUMNS"}
    env.update(
        {
            "STREAMML_BOOTSTRAP_SERVERS": bootstrap_servers,
            "STREAMML_NAMESPACE": f"c{uuid.uuid4().hex[:10]}.",
            "STREAMML_HOME": str(tmp_path / "home"),
            "STREAMML_MODEL_SIGNING_KEY_FILE": str(private),
            "STREAMML_MODEL_TRUSTED_KEYS": str(public),
        }
    )
    return env


@pytest.fixture
def run(cli_env: dict[str, str], tmp_path: Path) -> Runner:
    """``run(*args, env=None, timeout=60, input=None)``: run ``streamml`` and return a :class:`Run`.

    ``env`` entries are laid over the test's environment. A command that
    outlives ``timeout`` is killed and fails the test with its output.
    """

    def _run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0, input: str | None = None) -> Run:
        started = time.monotonic()
        try:
            done = subprocess.run(
                [STREAMML, *args],
                env={**cli_env, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                cwd=tmp_path,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            pytest.fail(f"streamml {' '.join(args)} did not return within {timeout:g}s\n{out[-2000:]}\n{err[-2000:]}")
        return Run(tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    return _run
