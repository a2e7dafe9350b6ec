"""What every request must satisfy before any route sees it: a printable path and query,
and a body within its route's limit.

Control characters in a path or query string (a NUL in ``/v1/participants/a%00b``)
reach no route: PostgreSQL cannot store NUL and no identifier holds one, so the request
is refused here with 422 instead of failing inside a database driver.

Request bodies are bounded before anything parses them.

Without this, FastAPI reads and JSON-parses a body before any dependency runs, so an
unauthenticated client could make the coordinator buffer and parse megabytes per
request. This ASGI middleware runs first: a body whose declared length is over the
route's limit is answered 413 without being read, and a body sent without a length
(chunked) is cut off at the limit and answered 413 as well.

Every route gets ``default`` bytes, which is ample for every query, consent and
registry call. The training relays (PSI points, the intersection, ciphertext batches)
legitimately carry megabytes, so those routes get ``large`` bytes, but only after the
caller has authenticated as a bureau: the credential is checked before the first byte
of the body is read, so an anonymous client never gets more than ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from creditshare.coordinator._problems import problem, problem_for
from creditshare.errors import CreditShareError

__all__ = ["LARGE_BODY_ROUTES", "RequestGuardMiddleware"]

#: The training relays whose bodies may exceed the default limit (bureaus only).
LARGE_BODY_ROUTES = re.compile(
    r"^/v1/training-jobs/[^/]+/(psi|open|forward|gradient|apply|level-sums|apply-level-sums"
    r"|tree-gradients|tree-histograms|tree-split|finish)$"
)

Authorise = Callable[[Scope], Awaitable[None]]


class _TooLargeError(Exception):
    pass


#: C0 controls and DEL, after percent-decoding.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RequestGuardMiddleware:
    def __init__(
        self, app: ASGIApp, *, default: int, large: int, authorise_large: Authorise
    ) -> None:
        self._app = app
        self._default = default
        self._large = large
        self._authorise_large = authorise_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        query = unquote_plus(scope.get("query_string", b"").decode("latin-1"))
        if _CONTROL.search(scope["path"]) or _CONTROL.search(query):
            where = "path" if _CONTROL.search(scope["path"]) else "query string"
            refused = problem(
                422, "Invalid request", f"the {where} contains a control character", field=where
            )
            await refused(scope, receive, send)
            return
        declared = _declared_length(Headers(scope=scope))
        if declared == -1:
            bad = problem(400, "Bad request", "Content-Length is not a number of bytes")
            await bad(scope, receive, send)
            return
        limit = self._default
        if (declared is None or declared > self._default) and LARGE_BODY_ROUTES.match(
            scope["path"]
        ):
            try:
                await self._authorise_large(scope)
            except CreditShareError as exc:
                await problem_for(exc)(scope, receive, send)
                return
            limit = self._large
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    # Stop the app's read here; whatever it answers is replaced below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                raise _TooLargeError
            started = True
            await send(message)

        try:
            await self._app(scope, limited_receive, guarded_send)
        except _TooLargeError:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _too_large(limit)(scope, receive, send)


def _declared_length(headers: Headers) -> int | None:
    """The Content-Length, None without one, -1 when it is not a number."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        return -1
    return int(value)


def _too_large(limit: int) -> JSONResponse:
    return problem(
        413,
        "Request body too large",
        f"the request body is over the {limit}-byte limit of this route",
        limit_bytes=limit,
    )
