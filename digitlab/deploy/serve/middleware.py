"""`PreparePictures`: the ASGI middleware in front of LitServe's ``POST /predict``.

It reads the body (up to a size limit), prepares the digit (`request_body`) in a thread of the HTTP server,
and passes LitServe only ``{"pixels": [784 values 0-255]}``; a bad request is answered here, 4xx with a
one-line reason. Why not in LitServe's `decode_request`: LitServe parses every non-form body as JSON (a PNG
would be a 500), and its batched loop decodes a whole batch in one ``try``, so one bad picture would fail the
good requests batched with it.

Bounds, so that abuse costs a client its own requests and not the server: pictures are prepared as many at a
time as there are cores, others wait for their turn up to a total of bytes beyond which one more is answered
503 at once; a waiting one gets 503 when it has waited `timeout` seconds. Light requests (JSON, and pictures
whose header declares at most `LIGHT_PIXELS`: a drawing, a photo of a digit) take their turns in a lane of
their own, one at a time, so that a flood of huge pictures never makes an ordinary request wait.

A body over the limit is answered 413, and what the client still sends is read and dropped (up to a bound)
before the answer ends: a connection closed with unread data is reset, and the client would never see the 413.
When the server stops (SIGTERM, Ctrl-C), a body still arriving or a picture still waiting is answered 503 at
once, so that stopping does not wait for slow clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from typing import Any, Awaitable, Callable, Optional, TypeVar

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from digitlab.data.own_images import declared_pixels
from digitlab.deploy.serve.request_body import MAX_BODY_BYTES, MAX_PIXELS, BadRequest, digit_from_body, is_json


WAITING_BYTES = 128 * 2**20  # of bodies waiting for a core, before more are answered 503 at once
DRAIN_BYTES = 64 * 2**20  # of a refused body, read and dropped so that the client gets its 413
DRAIN_SECONDS = 10.0
LIGHT_PIXELS = 1024 * 1024  # a picture this small is prepared in a few milliseconds
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


class Stopping(Exception):
    """The server is stopping: a request still under way is answered at once."""


class PreparePictures:
    def __init__(self, app: Callable, path: str = "/predict", max_body_bytes: int = MAX_BODY_BYTES,
                 max_pixels: int = MAX_PIXELS, timeout: float = 30.0) -> None:
        self.app, self.path, self.max_body_bytes, self.max_pixels = app, path, max_body_bytes, max_pixels
        self.timeout = timeout
        self.preparing: Optional[anyio.CapacityLimiter] = None  # made in the server's event loop, on first use
        self.preparing_light: Optional[anyio.CapacityLimiter] = None
        self.stopping: Optional[asyncio.Event] = None
        self.waiting_bytes = 0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        if self.stopping is None:
            self.stopping = _stop_event()
        headers = Headers(scope=scope)
        body_unread = True
        try:
            body = await self._read_body(receive, headers)
            body_unread = False
            digit = await self._prepare(body, headers.get("content-type", ""))
        except BadRequest as error:  # a body refused before its end: the client may still be sending it
            drain = body_unread and not getattr(error, "body_complete", False)
            return await self._answer(error, scope, receive, send, drain=drain)
        except Stopping:
            return await self._answer(BadRequest(503, "the server is stopping"), scope, receive, send, drain=False)
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
        """`digit_from_body` in a worker thread, as many at once as there are cores (more would only take turns
        on them, and a request's latency would grow with the number of requests under way), plus one light one."""
        if self.preparing is None:
            self.preparing, self.preparing_light = anyio.CapacityLimiter(os.cpu_count() or 1), anyio.CapacityLimiter(1)
        lane = self.preparing_light if _light(body, content_type) else self.preparing
        if self.waiting_bytes + len(body) > WAITING_BYTES:
            raise BadRequest(503, "busy: too many pictures are waiting to be prepared; try again shortly")
        turn = object()  # the limiter's borrower: the request, whichever task waits for it
        self.waiting_bytes += len(body)
        try:
            await self._unless_stopping(lane.acquire_on_behalf_of(turn), timeout=self.timeout)
        except TimeoutError:
            raise BadRequest(503, f"busy: no picture could be prepared within --timeout {self.timeout:g} "
                                  "seconds; try again shortly") from None
        finally:
            self.waiting_bytes -= len(body)
        try:
            return await anyio.to_thread.run_sync(digit_from_body, body, content_type, self.max_pixels)
        finally:
            lane.release_on_behalf_of(turn)

    async def _read_body(self, receive: Callable, headers: Headers) -> bytes:
        too_large = BadRequest(413, f"body too large: more than {self.max_body_bytes:,} bytes "
                                    "(`digitlab serve --max_body_bytes`)")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large
        chunks, size = [], 0
        while True:
            message = await self._unless_stopping(receive())
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                too_large.body_complete = not message.get("more_body", False)
                raise too_large
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _unless_stopping(self, step: Awaitable[T], timeout: Optional[float] = None) -> T:
        """What `step` gives; `Stopping` as soon as the server stops, `TimeoutError` after `timeout` seconds."""
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            unfinished = not task.done()
            if unfinished:
                task.cancel()
        if unfinished:
            raise Stopping() if self.stopping.is_set() else TimeoutError()
        return task.result()

    async def _answer(self, error: BadRequest, scope: dict, receive: Callable, send: Callable, drain: bool) -> None:
        """The error as JSON; when the client may still be sending its body, the end of the answer only once
        that body has been read and dropped (see the module)."""
        response = JSONResponse({"detail": str(error)}, error.status)
        if not drain:
            return await response(scope, receive, send)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [*response.raw_headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(Stopping):
            dropped = 0
            while dropped <= DRAIN_BYTES:
                message = await self._unless_stopping(receive())
                dropped += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    break
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _light(body: bytes, content_type: str) -> bool:
    """A request prepared in a few milliseconds: JSON (bounded by `MAX_JSON_BYTES`), or a picture whose header
    declares at most `LIGHT_PIXELS` (an unrecognised one is not: it is refused, but in the common lane)."""
    if is_json(body, content_type):
        return True
    pixels = declared_pixels(body)
    return pixels is not None and pixels <= LIGHT_PIXELS


def _stop_event() -> asyncio.Event:
    """An event set when this process (the HTTP server) is told to stop, by the signal that tells the server
    itself: chained in front of the server's own handler, which still runs."""
    loop, stopping = asyncio.get_running_loop(), asyncio.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return stopping
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(stopping.set)
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)
    return stopping
