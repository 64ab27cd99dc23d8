"""A cuttable Kafka-protocol proxy between the clients and a broker, for outage tests.

:class:`CuttableProxy` runs the Tansu binary's own ``proxy`` command on a
local port, forwarding to a broker. It rewrites the broker addresses in
metadata (and coordinator) responses to its own ``--advertised-listener-url``,
so clients that bootstrap through it keep talking through it: cutting it cuts
them all off, whatever the broker itself advertises (checked: a client
bootstrapped through the proxy sees one broker, at the proxy's address).

``cut()`` SIGKILLs the proxy process: the kernel closes every client
connection at once and the port refuses new ones. ``resume()`` starts a new
proxy on the same port. That is a whole-broker outage as the clients see it;
the broker itself keeps running and keeps its data.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from streamml.broker import resolve_binary

__all__ = ["CuttableProxy"]


class CuttableProxy:
    """``tansu proxy`` on ``127.0.0.1:port`` forwarding to ``origin`` (``host:port``); ``cut()``/``resume()``."""

    def __init__(self, *, port: int, origin: str, log_file: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.origin, self.log_file = host, port, origin, Path(log_file)
        self._process: subprocess.Popen[bytes] | None = None
        #: ``time.monotonic()`` of each cut and each resume.
        self.cuts: list[float] = []
        self.resumes: list[float] = []

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> CuttableProxy:
        assert not self.running, "the proxy already runs"
        url = f"tcp://{self.host}:{self.port}"
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [resolve_binary(), "proxy", "--listener-url", url, "--advertised-listener-url", url,
                 "--origin-url", f"tcp://{self.origin}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu proxy exited with {self._process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.cut()
                raise RuntimeError(f"tansu proxy did not listen on {self.bootstrap_servers} within {timeout:g}s")
            time.sleep(0.02)  # polling the port: the condition is re-checked each turn
        return self

    def cut(self) -> None:
        """Drop every client connection and refuse new ones (SIGKILL the proxy)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        self._process = None
        self.cuts.append(time.monotonic())

    def resume(self) -> None:
        """Accept connections again, on the same port."""
        self.start()
        self.resumes.append(time.monotonic())

    def refuses(self) -> bool:
        """True while nothing accepts connections on the proxy's port."""
        return not _accepts(self.host, self.port)

    def __enter__(self) -> CuttableProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cut()


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
