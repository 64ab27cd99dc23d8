"""The FastAPI app of ``streamml serve``: endpoints, request and answer models, errors.

``POST /predict``
    One of ``{"features": {"name": number, ...}}``, ``{"instances": [{...}, ...]}``
    (up to ``MAX_INSTANCES``), ``{"event": {...}}`` or ``{"events": [...]}``
    (raw events, featurized as the stream would, when the server has a
    featurizer). Every answer names the model version that made it; all rows
    of one request are scored by the same version. ``503`` (with
    ``Retry-After``) before the first model is loaded: there is no default
    prediction. ``422`` with the field and the reason for a body that does
    not fit, and naming the feature names the model never learned from or
    that every row it learned from had. ``413`` for a body over ``MAX_BODY_BYTES``.
``GET /model``
    The serving envelope's summary and ``serving_mode``: ``latest``,
    ``pinned`` or ``rolled_back``.
``GET /healthz``, ``GET /readyz``
    Liveness; readiness (``200`` once a verified model is loaded, ``503`` before).
``GET /metrics``
    Prometheus text format (:mod:`consumers.serving_metrics`).
``GET /openapi.json``, ``GET /docs``
    The OpenAPI schema (with the event schema of the featurizer) and its UI.

Every handler is ``async def``: each is CPU-light (a dict lookup, a few
microseconds of model arithmetic), and an ``async def`` handler runs on the
event loop, where a plain ``def`` one would pay a hop to the thread pool and
back on every request. A featurizer must be as light (see
:class:`~consumers.http_service.EventFeaturizer`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, Field, Strict, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from consumers.http_guard import BodyLimitAndMetrics
from consumers.http_service import MAX_INSTANCES, EventFeaturizer, ModelSource
from consumers.serving_metrics import CONTENT_TYPE, ServingMetrics
from consumers.swap import ServingModel
from streamml.errors import EventRejectedError, FeaturesUnavailableError, ModelNotReadyError

__all__ = ["build_app", "PredictRequest"]

logger = logging.getLogger(__name__)

#: A feature value: a finite JSON number (not a string, not a boolean, not NaN).
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Vector = Annotated[dict[str, Number], Field(min_length=1)]


class PredictRequest(BaseModel):
    """Exactly one of ``features``, ``instances``, ``event``, ``events``."""

    features: Vector | None = Field(None, description="one feature vector: feature name -> number")
    instances: Annotated[list[Vector], Field(min_length=1, max_length=MAX_INSTANCES)] | None = Field(
        None, description=f"a batch of 1 to {MAX_INSTANCES} feature vectors, scored by one version"
    )
    event: dict[str, Any] | None = Field(None, description="one raw event, featurized as the stream would")
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_INSTANCES)] | None = Field(
        None, description=f"a batch of 1 to {MAX_INSTANCES} raw events, scored by one version"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        given = [self.features, self.instances, self.event, self.events]
        if sum(value is not None for value in given) != 1:
            raise ValueError("send exactly one of {'features': {...}}, {'instances': [{...}, ...]}, "
                             "{'event': {...}} or {'events': [{...}, ...]}")
        return self


class Prediction(BaseModel):
    prediction: Any = Field(description="the class or the number the model predicts")
    probabilities: dict[str, float | None] = Field(description="class -> probability; {} for a regressor")


class PredictAnswer(Prediction):
    model_version: int


class BatchAnswer(BaseModel):
    model_version: int = Field(description="the one version that scored every row")
    predictions: list[Prediction]


class ErrorAnswer(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None
    violations: list[dict[str, str]] | None = None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, *, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.extra = extra


def _answer(status: int, body: Mapping[str, Any], retry_after: int | None = None) -> Response:
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return Response(json.dumps(body, separators=(",", ":")), status, headers, "application/json")


def _not_ready() -> Response:
    return _answer(503, {"ready": False, "error": "no model loaded yet"}, retry_after=1)


def _jsonable(value: Any) -> Any:
    """numpy scalars and other model outputs as plain JSON values."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)
    return _jsonable(item()) if callable(item) else str(value)


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the request names it: ``instances[1]['x']``."""
    if not loc:
        return "body"
    return str(loc[0]) + "".join(f"[{part}]" if isinstance(part, int) else f"[{part!r}]" for part in loc[1:])


def _invalid(exc: ValidationError) -> Response:
    """422 with one readable line, and pydantic's errors (without the input echoed back) as ``detail``."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        message = f"body is not JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    elif first["type"] == "model_type" and not first["loc"]:
        message = "body must be a JSON object"
    else:
        parts = [f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in errors[:5]]
        message = "; ".join(parts) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors[:20]]
    return _answer(422, {"error": message, "detail": detail})


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
        raise _BadRequest(422, f"{where}: " + "; ".join(parts))
    return x


def _score(serving: ServingModel, x: dict[str, float]) -> dict[str, Any]:
    try:
        prediction = serving.predict_one(x)
        proba = serving.predict_proba_one(x)  # {} for a regressor
    except Exception as exc:  # the model's own complaint about this input
        raise _BadRequest(422, f"the model cannot score these features: {exc}") from exc
    return {"prediction": _jsonable(prediction), "probabilities": {str(k): _jsonable(v) for k, v in proba.items()}}


def _vector(featurizer: EventFeaturizer | None, event: Mapping[str, Any], where: str) -> dict[str, float]:
    """The features of a raw event, or the 422/503 that says why there are none."""
    if featurizer is None:
        raise _BadRequest(422, f"{where}: raw events are not enabled on this server; send {{'features': {{...}}}}")
    try:
        return featurizer.vector(event)
    except EventRejectedError as exc:
        raise _BadRequest(422, f"{where}: {exc}", violations=exc.violations) from exc
    except FeaturesUnavailableError as exc:
        # Retryable: the cause passes by itself (window state still being read), so "try again soon".
        status, retry_after = (503, 1) if exc.retryable else (422, None)
        raise _BadRequest(status, f"{where}: {exc}", retry_after=retry_after, features=exc.features) from exc
    except Exception as exc:  # a featurizer's complaint about an odd event must not become a 500
        logger.debug("featurizing %s failed", where, exc_info=True)
        raise _BadRequest(422, f"{where}: the event cannot be featurized: {type(exc).__name__}: {exc}") from exc


def _hoisted(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved into OpenAPI's components and its ``$ref``s pointed there."""
    schema = dict(schema)
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = _hoisted(definition, components)

    def repoint(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" and isinstance(v, str) else repoint(v)
                for k, v in node.items()
            }
        return [repoint(v) for v in node] if isinstance(node, list) else node

    result: dict[str, Any] = repoint(schema)
    return result


def build_app(
    source: ModelSource, *, allow_extra_features: bool = False, featurizer: EventFeaturizer | None = None
) -> FastAPI:
    """The app serving ``source``'s current model (see the module docstring for the endpoints)."""
    metrics = ServingMetrics(source)
    app = FastAPI(
        title="streamml serve",
        summary="Predictions from the newest verified model on the models topic, hot-swapped",
        redoc_url=None,
    )
    app.add_middleware(BodyLimitAndMetrics, metrics=metrics)
    app.state.metrics = metrics
    request_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorAnswer, "description": what}
        for status, what in [(413, "body too large"), (422, "a body or features that do not fit"),
                             (503, "no model loaded yet (Retry-After)")]
    }

    @app.post("/predict", openapi_extra={"requestBody": request_body},
              responses={200: {"model": PredictAnswer | BatchAnswer}, **errors})
    async def predict(request: Request) -> Response:
        # The body is read and validated here rather than by FastAPI's body parameter: FastAPI
        # would treat a body without a JSON Content-Type (curl -d sends a form type) as bytes.
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _invalid(exc)
        try:
            serving = source.current()  # one snapshot for the whole request, whatever swaps meanwhile
        except ModelNotReadyError:
            return _not_ready()
        try:
            rows = _rows(body, serving)
            results = [_score(serving, x) for x in rows]
        except _BadRequest as exc:
            return _answer(exc.status, {"error": str(exc), **exc.extra}, exc.retry_after)
        metrics.predicted(len(results))
        if body.features is not None or body.event is not None:
            return _answer(200, {"model_version": serving.version, **results[0]})
        return _answer(200, {"model_version": serving.version, "predictions": results})

    def _rows(body: PredictRequest, serving: ServingModel) -> list[dict[str, float]]:
        if body.features is not None:
            return [_fit(serving, body.features, "features", allow_extra_features)]
        if body.instances is not None:
            return [_fit(serving, x, f"instances[{i}]", allow_extra_features) for i, x in enumerate(body.instances)]
        if body.event is not None:
            return [_fit(serving, _vector(featurizer, body.event, "event"), "event", allow_extra_features)]
        assert body.events is not None  # PredictRequest holds exactly one of the four
        return [
            _fit(serving, _vector(featurizer, e, f"events[{i}]"), f"events[{i}]", allow_extra_features)
            for i, e in enumerate(body.events)
        ]

    @app.get("/model", responses={503: {"model": ErrorAnswer}})
    async def model() -> Response:
        try:
            serving = source.current()
        except ModelNotReadyError:
            return _not_ready()
        return _answer(200, {**serving.envelope, "serving_mode": serving.mode})

    @app.get("/healthz")
    async def healthz() -> Response:
        return _answer(200, {"status": "ok"})

    @app.get("/readyz", responses={503: {"model": ErrorAnswer}})
    async def readyz() -> Response:
        try:
            serving = source.current()
        except ModelNotReadyError:
            return _not_ready()
        body: dict[str, Any] = {"ready": True, "model_version": serving.version}
        # Said, not gating: feature vectors are served either way, and a raw event
        # whose windowed features cannot be computed yet gets its own 503.
        features_ready = getattr(featurizer, "ready", None)
        if isinstance(features_ready, bool):
            body["raw_events_ready"] = features_ready
        return _answer(200, body)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        what = f"{request.method} {request.url.path}"
        message = {404: f"no such endpoint: {what}", 405: f"method not allowed: {what}"}.get(exc.status_code)
        return _answer(exc.status_code, {"error": message or str(exc.detail)})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            generated = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            request = _hoisted(generated, components)
            if featurizer is not None:
                # The event fields are the data contract's: show them instead of "any object".
                components["Event"] = _hoisted(featurizer.json_schema(), components)
                event = {"$ref": "#/components/schemas/Event"}
                properties = request["properties"]
                properties["event"] = {**event, "description": properties["event"]["description"]}
                properties["events"] = {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_INSTANCES,
                                        "description": properties["events"]["description"]}
            components["PredictRequest"] = request
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customize the schema
    return app
