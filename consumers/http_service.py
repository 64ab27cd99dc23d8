"""An HTTP scoring service that hot-swaps its model from the models topic.

:class:`ModelServer` runs the FastAPI app of :mod:`consumers.http_api` with
uvicorn in a background thread. The endpoints (``POST /predict``,
``GET /model``, ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``,
``/docs``) are described there and in ``docs/serving.md``.

A swap replaces one reference, and each request reads it once, so requests in
flight during a swap finish on the version they started with: none fails and
none waits for the swap.

This module imports neither FastAPI nor uvicorn at module level: ``import
consumers`` (an app that only wants :class:`~consumers.ModelSubscriber`) must
stay light, and ``consumers/__init__.py`` imports this module.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from consumers.swap import ServingModel
from streamml.errors import PortInUseError

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ModelServer", "ModelSource", "EventFeaturizer", "MAX_BODY_BYTES", "MAX_INSTANCES"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_INSTANCES = 1000

#: How long start() waits for uvicorn to come up, and stop() for requests in flight to finish.
_START_TIMEOUT_SECONDS = 10.0
_GRACEFUL_SECONDS = 5
#: Pending connections the kernel queues before uvicorn accepts them (a burst of clients at start).
_BACKLOG = 2048


class ModelSource(Protocol):
    """What the service needs: a consistent snapshot of the serving model.

    :class:`consumers.ModelSubscriber` is one; so is :class:`consumers.swap.ModelSlot`.
    A source that also has ``swaps`` and ``refused_by_reason`` gets them in ``/metrics``.
    """

    def current(self) -> ServingModel: ...


class EventFeaturizer(Protocol):
    """Turns a raw event into the feature vector the stream would build for it.

    It runs on the server's event loop, so it must not block (no I/O per call).
    """

    def vector(self, event: Mapping[str, Any]) -> dict[str, float]:
        """The features of ``event``.

        Raises :class:`~streamml.errors.EventRejectedError` when the event breaks
        the data contract, :class:`~streamml.errors.FeaturesUnavailableError`
        when a feature cannot be computed here (yet).
        """
        ...

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of one event (the data contract), shown in the OpenAPI schema."""
        ...


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port``; :class:`PortInUseError` in one line if it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # As http.server did: a port left in TIME_WAIT by a previous run is reusable at once.
        # Linux still refuses a port another socket listens on, which is what PortInUseError is for.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is already in use; choose another with --port") from exc
        raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class ModelServer:
    """Serve ``source``'s current model over HTTP on ``host:port`` (port 0: any free one).

    A request naming a feature the model never learned from, or lacking one
    every learned row had, gets 422 naming them; ``allow_extra_features``
    drops unknown names instead. With a ``featurizer``, ``/predict`` also
    takes raw events (``{"event": {...}}``) and featurizes them as the stream
    would. The socket is bound here, so a taken port raises
    :class:`PortInUseError` before anything runs.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        allow_extra_features: bool = False,
        featurizer: EventFeaturizer | None = None,
    ) -> None:
        self._socket = _listening_socket(host, port)
        # Deferred: see the module docstring (fastapi and uvicorn load only when a server is made).
        import uvicorn

        from consumers.http_api import build_app

        self.app = build_app(source, allow_extra_features=allow_extra_features, featurizer=featurizer)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self._url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
        config = uvicorn.Config(
            self.app,
            host=bound_host,
            port=bound_port,
            # The app's logging stays the app's: uvicorn configures no handlers (log_config=None),
            # says only warnings and errors, and logs no line per request.
            log_config=None,
            log_level="warning",
            access_log=False,
            # No startup/shutdown hooks: the app holds no resources of its own to open or close.
            lifespan="off",
            timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        )
        self._server: uvicorn.Server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on (the real port when asked for port 0)."""
        return self._url

    def start(self) -> ModelServer:
        """Serve in a background thread; return once uvicorn accepts connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="streamml-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        # uvicorn has no "started" event to wait on, only a flag: re-check it until the deadline,
        # and give up early if the thread died (its error is named here).
        while not self._server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"the HTTP server on {self.url} failed to start: {self._failure}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the HTTP server on {self.url} did not start within {_START_TIMEOUT_SECONDS:g}s")
            self._thread.join(0.005)  # returns at once if the thread ends
        return self

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start() rather than lost with the thread
            self._failure = exc
            logger.error("the HTTP server on %s stopped: %s", self.url, exc, exc_info=True)

    def stop(self) -> None:
        """Stop accepting requests, finish the ones in flight, close the socket, end the thread."""
        thread = self._thread
        if thread is not None:
            self._server.should_exit = True  # uvicorn's main loop checks it every 0.1 s
            thread.join(_GRACEFUL_SECONDS + _START_TIMEOUT_SECONDS)
            if thread.is_alive():
                logger.warning("the HTTP server thread on %s did not end in time", self.url)
            else:
                self._thread = None
        self._socket.close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
