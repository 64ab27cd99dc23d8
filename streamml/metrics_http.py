"""Serve one component's Prometheus registry over HTTP, and name the samples it can hold.

Every long-running component keeps its metrics in a
:class:`prometheus_client.CollectorRegistry` of its own (never the global
default registry, so tests and apps can run several components in one
process). :class:`MetricsExporter` serves such a registry at
``http://HOST:PORT/metrics`` with prometheus_client's own threaded server; a
taken port is one :class:`~streamml.errors.PortInUseError` line (exit 2).
``streamml process``, ``learn`` and ``score`` start one when
``STREAMML_METRICS_PORT`` (or ``--metrics-port``) is set; see ``docs/metrics.md``.

:func:`sample_names` expands metric families into the sample names a scrape
shows (``_total``, ``_bucket``...): what a dashboard query names, so a test
can check that a dashboard asks only for metrics the code exports.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from streamml.config import Settings
from streamml.errors import PortInUseError

__all__ = ["MetricsExporter", "exporter_for", "sample_names", "SAMPLE_SUFFIXES"]

logger = logging.getLogger(__name__)

#: Sample name suffixes of each metric type, as prometheus_client writes them.
SAMPLE_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def sample_names(families: Mapping[str, str]) -> tuple[str, ...]:
    """Every name a scrape can show for ``families`` (``name -> type``), sorted.

    >>> sample_names({"streamml_x": "counter", "streamml_y": "gauge"})
    ('streamml_x', 'streamml_x_created', 'streamml_x_total', 'streamml_y')

    A counter's family name is included: the text format's ``# TYPE`` line uses it.
    """
    names: set[str] = set()
    for family, kind in families.items():
        suffixes = SAMPLE_SUFFIXES.get(kind)
        if suffixes is None:
            raise ValueError(f"unknown metric type {kind!r} of {family}")
        names.add(family)
        names.update(family + suffix for suffix in suffixes)
    return tuple(sorted(names))


class MetricsExporter:
    """``/metrics`` for one registry on ``host:port`` (port 0: any free one), in a daemon thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    :meth:`start` raises :class:`~streamml.errors.PortInUseError` when the
    port cannot be bound.
    """

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` with the port actually bound (after :meth:`start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsExporter:
        """Bind the port and serve; returns ``self``."""
        if self._server is not None:
            return self
        try:
            server, thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"metrics port {self.port} on {self.host} is already in use; choose another with "
                    "--metrics-port or STREAMML_METRICS_PORT"
                ) from exc
            raise PortInUseError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        logger.info("metrics at %s", self.url, extra={"event": "metrics_started", "url": self.url})
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # ends serve_forever; in-flight scrapes finish first
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> MetricsExporter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def exporter_for(
    settings: Settings, registry: CollectorRegistry, *, port: int | None = None
) -> MetricsExporter | None:
    """The exporter the settings ask for (``port`` overrides ``metrics_port``), or ``None`` when off."""
    chosen = settings.metrics_port if port is None else port
    if chosen is None:
        return None
    return MetricsExporter(registry, host=settings.metrics_host, port=chosen)
