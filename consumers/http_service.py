"""An HTTP scoring service that hot-swaps its model from the models topic.

Endpoints (JSON in, JSON out):

``POST /predict``
    ``{"features": {"name": number, ...}}`` for one prediction, or
    ``{"instances": [{...}, ...]}`` for up to ``MAX_INSTANCES``. Every answer
    names the model version that made it; all instances of one request are
    scored by the same version. ``503`` (with ``Retry-After``) before the
    first model is loaded: there is no default prediction. ``422`` naming
    the feature names the model never learned from or that every row it
    learned from had (strict by default, see :class:`ModelServer`).
``GET /model``
    The serving envelope's summary (version, metrics, created-at, signer,
    ``feature_names`` the model learned from, ...)
    and ``serving_mode``: ``latest``, ``pinned`` or ``rolled_back``.
``GET /healthz``
    Liveness: the process answers.
``GET /readyz``
    Readiness: ``200`` once a model is loaded, ``503`` before.

A swap replaces one reference, and each request reads it once, so requests in
flight during a swap finish on the version they started with: none fails and
none waits for the swap.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from consumers.swap import ServingModel
from streamml.errors import ModelNotReadyError, PortInUseError

__all__ = ["ModelServer", "ModelSource", "MAX_BODY_BYTES", "MAX_INSTANCES"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_INSTANCES = 1000


class ModelSource(Protocol):
    """What the service needs: a consistent snapshot of the serving model.

    :class:`consumers.ModelSubscriber` is one; so is :class:`consumers.swap.ModelSlot`.
    """

    def current(self) -> ServingModel: ...


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(value: Any) -> Any:
    """numpy scalars and other model outputs as plain JSON values."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    return _jsonable(item()) if callable(item) else str(value)


def _features(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"{where} must be a non-empty object of feature name -> number")
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _BadRequest(HTTPStatus.BAD_REQUEST, f"{where}[{name!r}] must be a finite number, got {value!r}")
    return {str(k): float(v) for k, v in raw.items()}


def _fit(serving: ServingModel, x: dict[str, float], where: str, allow_extra: bool) -> dict[str, float]:
    """``x`` checked against the names the model learned from: 422 naming unknown or missing ones.

    With ``allow_extra``, unknown names are dropped instead (the model never
    learned a weight for them).
    """
    unknown, missing = serving.inputs.problems(x)
    if unknown and allow_extra:
        x = {k: v for k, v in x.items() if k not in unknown}
        unknown = []
    if unknown or missing:
        parts = []
        if unknown:
            known = ", ".join(sorted(serving.inputs.known)[:20])
            parts.append(f"unknown feature(s) {', '.join(unknown)} (v{serving.version} learned from: {known})")
        if missing:
            parts.append(f"missing feature(s) {', '.join(missing)}")
        raise _BadRequest(HTTPStatus.UNPROCESSABLE_ENTITY, f"{where}: " + "; ".join(parts))
    return x


def _score(serving: ServingModel, x: dict[str, float]) -> dict[str, Any]:
    try:
        prediction = serving.predict_one(x)
        proba = serving.predict_proba_one(x)  # {} for a regressor
    except Exception as exc:  # the model's own complaint about this input
        raise _BadRequest(HTTPStatus.UNPROCESSABLE_ENTITY, f"the model cannot score these features: {exc}") from exc
    return {
        "prediction": _jsonable(prediction),
        "probabilities": {str(k): _jsonable(v) for k, v in proba.items()},
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
        elif self.path in ("/readyz", "/model"):
            try:
                serving = self.server.source.current()
            except ModelNotReadyError:
                self._not_ready()
                return
            body = {"ready": True, "model_version": serving.version}
            model = {**serving.envelope, "serving_mode": serving.mode}
            self._send(HTTPStatus.OK, model if self.path == "/model" else body)
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: GET {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/predict":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: POST {self.path}"})
            return
        try:
            request = self._read_json()
            try:
                serving = self.server.source.current()  # one snapshot for the whole request
            except ModelNotReadyError:
                self._not_ready()
                return
            if "instances" in request:
                instances = request["instances"]
                if not isinstance(instances, list) or not 1 <= len(instances) <= MAX_INSTANCES:
                    raise _BadRequest(
                        HTTPStatus.BAD_REQUEST, f"'instances' must be a list of 1 to {MAX_INSTANCES} objects"
                    )
                extra = self.server.allow_extra_features
                results = [
                    _score(serving, _fit(serving, _features(x, f"instances[{i}]"), f"instances[{i}]", extra))
                    for i, x in enumerate(instances)
                ]
                body: dict[str, Any] = {"model_version": serving.version, "predictions": results}
            elif "features" in request:
                extra = self.server.allow_extra_features
                x = _fit(serving, _features(request["features"], "features"), "features", extra)
                body = {"model_version": serving.version, **_score(serving, x)}
            else:
                raise _BadRequest(HTTPStatus.BAD_REQUEST, "send {'features': {...}} or {'instances': [{...}, ...]}")
        except _BadRequest as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        self._send(HTTPStatus.OK, body)

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "invalid Content-Length") from None
        if length > MAX_BODY_BYTES:
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except ValueError as exc:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return request

    def _not_ready(self) -> None:
        self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "error": "no model loaded yet"}, retry_after=1)

    def _send(self, status: HTTPStatus, body: dict[str, Any], retry_after: int | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: ModelSource, allow_extra_features: bool) -> None:
        super().__init__(address, _Handler)
        self.source = source
        self.allow_extra_features = allow_extra_features


class ModelServer:
    """Serve ``source``'s current model over HTTP on ``host:port`` (port 0: any free one).

    A request naming a feature the model never learned from, or lacking one
    every learned row had, gets 422 naming them; ``allow_extra_features``
    drops unknown names instead. Raises :class:`PortInUseError` when the port
    is taken.
    """

    def __init__(
        self, source: ModelSource, *, host: str = "127.0.0.1", port: int = 8080, allow_extra_features: bool = False
    ) -> None:
        try:
            self._server = _Server((host, port), source, allow_extra_features)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use; choose another with --port"
                ) from exc
            raise PortInUseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        # server_bind() sets the address from getsockname(): the host of an AF_INET socket is a str.
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def start(self) -> ModelServer:
        """Serve in a background thread and return at once."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamml-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting requests, finish the ones in flight, close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
