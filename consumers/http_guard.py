"""The outermost ASGI layer of ``streamml serve``: the body-size limit and the request metrics.

It runs before FastAPI parses anything, so a body over ``MAX_BODY_BYTES`` is
refused with 413 without being read whole (a chunked body is counted as it
comes), and every request, refused or not, is timed and counted by endpoint
and status in :class:`~consumers.serving_metrics.ServingMetrics`.
"""

from __future__ import annotations

import json
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consumers.http_service import MAX_BODY_BYTES
from consumers.serving_metrics import ServingMetrics

__all__ = ["BodyLimitAndMetrics"]


class BodyLimitAndMetrics:
    """Outer ASGI layer: 413 for a body over the limit before the app reads it, and request metrics.

    A plain ASGI class rather than Starlette's ``BaseHTTPMiddleware``, which
    would add a task and a memory stream to every request.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            if length is not None:
                # The HTTP parser has refused a malformed Content-Length before the app sees it.
                too_big = not length.isdigit() or int(length) > MAX_BODY_BYTES
            elif scope["method"] in ("POST", "PUT", "PATCH"):
                # Chunked: no length up front, so read it here, counting, and replay it to the app.
                receive, too_big = await self._buffered(receive)
            else:
                too_big = False
            if too_big:
                body = json.dumps({"error": f"body over {MAX_BODY_BYTES} bytes"}).encode()
                await Response(body, 413, media_type="application/json")(scope, receive, send_counted)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)

    @staticmethod
    async def _buffered(receive: Receive) -> tuple[Receive, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                return receive, True
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay, False
