"""The ingress's two ASGI middlewares, and the per-request state they share with it.

`BodyLimit` refuses a body over `Limits.max_request_bytes` with a 413 naming `body`, whether it declares
its length or streams chunks without one; `RequestDeadline` starts the request's clock from
`X-Request-Timeout: <seconds>` (what the client will wait): a member call whose deadline has passed when
its batch would run is dropped, not computed, and the request answers 504.

Serve runs a frozen copy of the FastAPI app and pickles the ingress class by value: state shared between
the ingress and these middlewares goes through this module, which both import by reference.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar

from fastapi.responses import JSONResponse

from mrm_ray.serve.api import BadInput

_max_request_bytes: int | None = None  # set by the ingress replica, read by its body-size middleware


def set_max_request_bytes(limit: int) -> None:
    global _max_request_bytes
    _max_request_bytes = limit


def max_request_bytes() -> int | None:
    return _max_request_bytes


TIMEOUT_HEADER = "X-Request-Timeout"
_deadline: ContextVar[float | None] = ContextVar("mrm_request_deadline", default=None)


def parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInput(f"headers.{TIMEOUT_HEADER}", f"{value!r} is not a positive number of seconds")
    return seconds


def set_deadline(seconds: float):
    """Start this request's clock (a token for `reset_deadline`)."""
    return _deadline.set(time.monotonic() + seconds)


def reset_deadline(token) -> None:
    _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until this request's deadline (<= 0: passed), or None without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


class BodyLimit:
    """ASGI middleware: a body over `Limits.max_request_bytes` gets a 413 naming `body`, whether it
    declares its length or streams chunks without one (counted as they arrive; reading stops there)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        limit = max_request_bytes()
        if scope["type"] != "http" or not limit:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, f"request body of {int(declared)} bytes is over the limit "
                               f"of {limit}")
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > limit:
                await self._refuse(scope, receive, send, f"request body of more than {limit} bytes (streamed) is "
                                   "over the limit")
                return
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, message: str) -> None:
        await JSONResponse({"error": message, "field": "body"}, status_code=413)(scope, receive, send)


class RequestDeadline:
    """ASGI middleware: `X-Request-Timeout: <seconds>` starts the request's clock (`time_left`); a value
    that is not a positive number gets a 422 naming the header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        value = dict(scope.get("headers") or ()).get(TIMEOUT_HEADER.lower().encode()) \
            if scope["type"] == "http" else None
        if value is None:
            await self.app(scope, receive, send)
            return
        try:
            seconds = parse_timeout(value.decode("latin-1"))
        except BadInput as exc:
            await JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)(scope, receive, send)
            return
        token = set_deadline(seconds)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_deadline(token)
