"""A small web app that embeds the model: an HTML form, a JSON endpoint, hot swaps in-process.

Run it (see README.md next to this file)::

    uvicorn --factory examples.webapp.app:create_app --port 8000

The app starts a :class:`~consumers.ModelSubscriber` in its lifespan (waiting
a bounded time so it is ready before its first request when a model exists)
and stops it on shutdown. Each request reads the serving model once
(``current()``), so the answer and the version it reports always belong
together, and a swap never fails or holds a request.
"""

from __future__ import annotations

import html
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from consumers import ModelSubscriber
from streamml.config import Settings, load_settings
from streamml.errors import ModelNotReadyError

#: Features the form asks for when the serving envelope names none.
DEFAULT_FEATURES = ("a", "b")


def create_app(settings: Settings | None = None, *, ready_timeout: float = 10.0) -> FastAPI:
    """The app; settings default to ``STREAMML_*`` from the environment, read when the app is made."""
    settings = settings or load_settings()
    fallback = tuple(f for f in os.environ.get("EXAMPLE_FEATURES", "").split(",") if f) or DEFAULT_FEATURES

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        models = ModelSubscriber(settings).start()
        # Without blocking the event loop; not ready yet is fine: requests get a 503 until it is.
        await models.wait_ready_async(timeout=ready_timeout)
        app.state.models = models
        try:
            yield
        finally:
            models.stop()

    app = FastAPI(title="streamml example", lifespan=lifespan)

    def features_of(models: ModelSubscriber) -> Sequence[str]:
        named = (models.envelope or {}).get("feature_names") or []
        return [name for name in named if "=" not in name] or list(fallback)  # one-hot names are not form fields

    def page(models: ModelSubscriber, values: dict[str, str], answer: str = "") -> str:
        inputs = "".join(
            f'<label>{html.escape(n)} <input type="number" step="any" name="{html.escape(n)}" '
            f'value="{html.escape(values.get(n, ""))}" required></label><br>'
            for n in features_of(models)
        )
        serving = f"v{models.version}" if models.ready else "no model yet"
        return (
            "<!doctype html><title>streamml example</title>"
            f"<h1>{html.escape(models.model_name)} ({serving})</h1>"
            f'<form method="post" action="/">{inputs}<button>Predict</button></form>{answer}'
        )

    def predict(models: ModelSubscriber, x: dict[str, float]) -> dict[str, Any]:
        serving = models.current()  # one snapshot: the version reported is the one that answered
        return {
            "model_version": serving.version,
            "prediction": serving.predict_one(x),
            "probabilities": {str(k): v for k, v in serving.predict_proba_one(x).items()},
        }

    @app.get("/", response_class=HTMLResponse)
    async def form(request: Request) -> HTMLResponse:
        return HTMLResponse(page(request.app.state.models, {}))

    @app.post("/", response_class=HTMLResponse)
    async def submit(request: Request) -> HTMLResponse:
        models: ModelSubscriber = request.app.state.models
        # A plain form posts application/x-www-form-urlencoded: parsed here, no multipart dependency.
        values = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            x = {name: float(values[name]) for name in features_of(models)}
        except (KeyError, ValueError):
            return HTMLResponse(page(models, values, "<p>Every field needs a number.</p>"), status_code=400)
        try:
            result = predict(models, x)
        except ModelNotReadyError:
            return HTMLResponse(page(models, values, "<p>No model yet; try again soon.</p>"), status_code=503)
        answer = (
            f'<p>Prediction: <b id="prediction">{html.escape(str(result["prediction"]))}</b> '
            f'by model <b id="version">v{result["model_version"]}</b></p>'
        )
        return HTMLResponse(page(models, values, answer))

    @app.post("/predict")
    async def predict_json(request: Request) -> JSONResponse:
        models: ModelSubscriber = request.app.state.models
        body = await request.json()
        features = body.get("features") if isinstance(body, dict) else None
        if not isinstance(features, dict):
            return JSONResponse({"error": 'expected {"features": {"name": number, ...}}'}, status_code=400)
        try:
            return JSONResponse(predict(models, features))
        except ModelNotReadyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        models: ModelSubscriber = request.app.state.models
        body = {"ready": models.ready, "model_version": models.version}
        return JSONResponse(body, status_code=200 if models.ready else 503)

    return app
