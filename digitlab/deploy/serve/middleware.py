"""`PreparePictures`: the ASGI middleware in front of LitServe's ``POST /predict``.

It reads the body (up to a size limit), prepares the digit (`request_body`) in a thread of the HTTP server,
and passes LitServe only ``{"pixels": [784 values 0-255]}``; a bad request is answered here, 4xx with a
one-line reason. Why not in LitServe's `decode_request`: LitServe parses every non-form body as JSON (a PNG
would be a 500), and its batched loop decodes a whole batch in one ``try``, so one bad picture would fail the
good requests batched with it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from digitlab.deploy.serve.request_body import MAX_BODY_BYTES, MAX_PIXELS, BadRequest, digit_from_body


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class PreparePictures:
    def __init__(self, app: Callable, path: str = "/predict", max_body_bytes: int = MAX_BODY_BYTES,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.app, self.path, self.max_body_bytes, self.max_pixels = app, path, max_body_bytes, max_pixels
        self.preparing: Optional[anyio.CapacityLimiter] = None  # made in the server's event loop, on first use

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        try:
            body = await self._read_body(receive, headers)
            digit = await self._prepare(body, headers.get("content-type", ""))
        except BadRequest as error:
            return await JSONResponse({"detail": str(error)}, error.status)(scope, receive, send)
        except ClientGone:
            return
        forwarded = json.dumps({"pixels": digit.flatten().tolist()}).encode()
        kept = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        scope = {**scope, "headers": [*kept, (b"content-type", b"application/json"),
                                      (b"content-length", str(len(forwarded)).encode())]}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # later reads wait for the client to disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": forwarded, "more_body": False}

        await self.app(scope, replay, send)

    async def _prepare(self, body: bytes, content_type: str) -> Any:
        """`digit_from_body` in a worker thread, as many at once as there are cores: more would only take turns
        on them, and a request's latency would grow with the number of requests under way."""
        if self.preparing is None:
            self.preparing = anyio.CapacityLimiter(os.cpu_count() or 1)
        return await anyio.to_thread.run_sync(digit_from_body, body, content_type, self.max_pixels,
                                              limiter=self.preparing)

    async def _read_body(self, receive: Callable, headers: Headers) -> bytes:
        too_large = BadRequest(413, f"body too large: more than {self.max_body_bytes:,} bytes "
                                    "(`digitlab serve --max_body_bytes`)")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                raise too_large
            if not message.get("more_body", False):
                return b"".join(chunks)
