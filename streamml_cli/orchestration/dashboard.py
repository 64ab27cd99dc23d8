"""The web side of ``streamml monitor``: one live page, the data it draws, ``/metrics`` and ``/healthz``.

Routes of :func:`build_app`:

``GET /``
    The dashboard: ``dashboard.html`` and ``dashboard.js`` beside this module
    (static files, no build step, no library: the charts are SVG drawn by the
    script). It polls ``/api/snapshot``.
``GET /api/snapshot``
    :meth:`~streamml_cli.orchestration.monitor_series.SampleRing.series` as
    JSON (``docs/monitor.md`` lists its fields).
``GET /metrics``
    The monitor's Prometheus registry, text format.
``GET /healthz``
    200 while the sampler runs and its newest sample is recent, else 503: the
    monitor's own health (a broker that does not answer is a fact it reports,
    not a fault of the monitor).

:class:`DashboardServer` runs the app with uvicorn on a daemon thread, as
``streamml serve`` does (:mod:`consumers.http_service`): the socket is bound
first, so a taken port is one :class:`~streamml.errors.PortInUseError` line.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streamml.errors import PortInUseError
from streamml_cli.orchestration.monitor_series import SampleRing

__all__ = ["build_app", "DashboardServer", "page_text", "Health"]

logger = logging.getLogger(__name__)

#: ``() -> (healthy, details)``: what ``/healthz`` answers.
Health = Callable[[], tuple[bool, dict[str, Any]]]

_START_TIMEOUT_SECONDS = 10.0
_GRACEFUL_SECONDS = 3


def page_text(name: str) -> str:
    """A static file of the dashboard (``dashboard.html``, ``dashboard.js``), shipped as package data."""
    return (resources.files("streamml_cli.orchestration") / name).read_text(encoding="utf-8")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def build_app(ring: SampleRing, registry: CollectorRegistry, health: Health) -> Any:
    """The monitor's ASGI app (a FastAPI instance without API docs: four fixed routes)."""
    from fastapi import FastAPI  # deferred: 'streamml --help' stays light
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    html, script = page_text("dashboard.html"), page_text("dashboard.js")
    app = FastAPI(title="streamml monitor", docs_url=None, redoc_url=None, openapi_url=None)
    no_store = {"Cache-Control": "no-store"}

    @app.get("/")
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers=no_store)

    @app.get("/dashboard.js")
    def page_script() -> Response:
        return Response(script, media_type="text/javascript", headers=no_store)

    @app.get("/api/snapshot")
    def snapshot() -> JSONResponse:
        return JSONResponse(_finite(ring.series()), headers=no_store)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        healthy, details = health()
        return JSONResponse({"ok": healthy, **details}, status_code=200 if healthy else 503)

    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; :class:`PortInUseError` in one line if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is reusable at once
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is already in use; choose another with --port") from exc
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class DashboardServer:
    """Serve ``app`` on ``host:port`` (0: any free port) with uvicorn, in a daemon thread.

    The socket is bound here: a taken port raises :class:`PortInUseError`
    before anything else starts. Use as a context manager.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 9308) -> None:
        self._socket = _listening_socket(host, port)
        import uvicorn  # deferred with fastapi

        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
        config = uvicorn.Config(
            app, host=bound_host, port=bound_port, log_config=None, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start() instead of lost with the thread
            self._failure = exc
            logger.error("the monitor's HTTP server on %s stopped: %s", self.url, exc)

    def start(self) -> DashboardServer:
        """Serve; return once uvicorn accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="streamml-monitor-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:  # uvicorn sets a flag, it has no event to wait on
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the monitor's HTTP server on {self.url} did not start: {self._failure}")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        """Finish the requests in flight, close the socket, end the thread."""
        if self._thread is not None:
            self._server.should_exit = True  # uvicorn's loop checks it every 0.1 s
            self._thread.join(_GRACEFUL_SECONDS + 5)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
