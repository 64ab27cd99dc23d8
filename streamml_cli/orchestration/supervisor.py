"""Run pipeline components as child processes, as they run in production.

Each component is the same ``streamml`` command a deployment runs (see
``docker-compose.yml``), started with the parent's settings in its environment
and its output in a log file. Children get their own session, so a Ctrl-C in
the terminal reaches only the parent, which then stops them in order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from streamml.config import Settings
from streamml.errors import ComponentError

__all__ = ["Component", "Supervisor"]


@dataclass
class Component:
    """One running ``streamml`` command."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    expected_exit: bool = False
    #: ``time.monotonic()`` when it was started.
    started_at: float = field(default_factory=time.monotonic)

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def log_versions(self, pattern: re.Pattern[str]) -> list[int]:
        """The version numbers of log lines matching ``pattern`` (group 1), in log order.

        Components announce what they publish and serve in one line each
        (``published demo-classifier v3 (...)``, ``serving demo-classifier v3 (...)``);
        an unreadable log is an empty list.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [int(m.group(1)) for m in pattern.finditer(text)]


class Supervisor:
    """Start, watch and stop components; use as a context manager to stop all on exit."""

    def __init__(self, settings: Settings, run_dir: Path) -> None:
        self._env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.run_dir = run_dir
        self.components: dict[str, Component] = {}

    def start(self, name: str, args: list[str], *, expected_exit: bool = False) -> Component:
        """Start ``streamml ARGS`` as component ``name``.

        ``expected_exit`` marks a component that finishes on its own (a
        bounded producer): its exit with code 0 is not a failure.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamml_cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                start_new_session=True,
            )
        component = Component(name, args, log_path, process, expected_exit)
        self.components[name] = component
        return component

    def check(self) -> None:
        """Raise :class:`ComponentError` if a component exited unexpectedly."""
        for component in self.components.values():
            code = component.exit_code
            if code is None or (component.expected_exit and code == 0):
                continue
            raise ComponentError(
                f"{component.name} ('streamml {' '.join(component.args)}') exited with code {code}; "
                f"log {component.log_path}:\n{component.log_tail()}"
            )

    def stop(self, name: str, timeout: float = 20.0) -> int:
        """Send SIGTERM (then SIGKILL after ``timeout``) and return the exit code."""
        component = self.components[name]
        if component.process.poll() is None:
            component.process.send_signal(signal.SIGTERM)
            try:
                component.process.wait(timeout)
            except subprocess.TimeoutExpired:
                component.process.kill()
                component.process.wait(timeout)
        component.expected_exit = True
        return component.process.returncode

    def stop_all(self, timeout: float = 20.0) -> dict[str, int]:
        """Stop every component, newest first (consumers before what feeds them)."""
        return {name: self.stop(name, timeout) for name in reversed(list(self.components))}

    def terminate_all(self, grace: float = 10.0) -> dict[str, int]:
        """Stop every component at once: SIGTERM to all, SIGKILL to those still running after ``grace`` seconds.

        The failure path: components stopped one by one could take ``grace``
        each, and order no longer matters once the run is abandoned.
        """
        running = [c for c in self.components.values() if c.process.poll() is None]
        for component in running:
            component.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for component in running:
            try:
                component.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.process.kill()
        for component in running:
            try:
                component.process.wait(grace)  # SIGKILL cannot be ignored: this returns at once
            except subprocess.TimeoutExpired:
                pass  # unkillable (a zombie's parent is us, so only a stuck kernel call): nothing more to do
            component.expected_exit = True
        return {name: c.process.returncode for name, c in self.components.items()}

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.stop_all()
        else:
            self.terminate_all()
