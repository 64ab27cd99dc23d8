"""The fault tier: real component processes on the session broker, killed and restarted.

Every test here is also an ``integration`` test (it needs the broker) and is
marked ``faults`` (registered below, so ``-m faults`` selects the tier). The
``settings``/``topics`` fixtures and the signing keys in the environment are
the integration tier's: each test has its own namespace, topics and groups.

:class:`Component` runs one ``streamml <command>`` as a child process with the
test's settings (bootstrap servers, namespace, signing keys, home) in its
environment, its output in a log file, and kills (SIGKILL), stops (SIGTERM)
and restarts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamml.config import Settings
from tests.faults.checker import now_ms

# The integration tier's fixtures, shared (pytest finds fixtures by name in a conftest's namespace).
from tests.integration.conftest import model_keys_in_env, settings, topics  # noqa: F401

STREAMML = Path(sys.executable).with_name("streamml")
_HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection tier (kills, restarts, bad input at volume)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


class Component:
    """One ``streamml COMMAND ARGS`` child process, restartable; each run appends to ``log``."""

    def __init__(
        self, command: str, config: Settings, log_dir: Path, *args: str, name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = command
        self.settings = config
        self.args = args
        self.name = name or command
        self.log = log_dir / f"{self.name}.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        #: Epoch ms of each start, and of each SIGKILL.
        self.starts: list[int] = []
        self.kills: list[int] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        env.update(self.settings.to_env())
        env.update({"STREAMML_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def start(self) -> Component:
        assert self.process is None or self.process.poll() is not None, f"{self.name} already running"
        with open(self.log, "ab") as log:
            log.write(f"==== start {self.name} at {now_ms()} ====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(STREAMML), self.command, *self.args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env(),
            )
        self.starts.append(now_ms())
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no clean stop, no commit, no flush."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills.append(now_ms())
        self.process.wait(timeout=30)

    def restart(self) -> Component:
        self.kill()
        return self.start()

    def stop(self, timeout: float = 45.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); return the exit code (None if it had to be killed)."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def assert_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")


@pytest.fixture
def components(tmp_path: Path) -> Iterator[list[Component]]:
    """Components a test starts go here; every one still running is killed at the end."""
    started: list[Component] = []
    yield started
    for component in started:
        if component.running:
            component.kill()


@pytest.fixture
def spawn(components: list[Component], settings: Settings, tmp_path: Path):  # noqa: ANN201, F811
    """``spawn("process", *args, name=...)`` -> a started :class:`Component` with this test's settings."""

    def start(command: str, *args: str, name: str | None = None, env: dict[str, str] | None = None,
              settings_: Settings | None = None) -> Component:
        component = Component(command, settings_ or settings, tmp_path, *args, name=name, env=env)
        components.append(component)
        return component.start()

    return start
