"""Per-request context: the request id (header, logs), access log, HTTP metrics.

The request id reaches the nodes as metadata through ``relay._call_timing``."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from creditshare._logging import (
    REQUEST_ID_HEADER,
    new_request_id,
    request_id_var,
    valid_request_id,
)
from creditshare.coordinator._metrics import CoordinatorMetrics

__all__ = ["RequestContextMiddleware"]

log = logging.getLogger("creditshare.coordinator.http")

#: Probes and scrapes: logged at debug level, so they do not drown the access log.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestContextMiddleware:
    """Gives each HTTP request an id, answers with it, logs and counts the request.

    The id is the caller's ``X-Request-ID`` when it is short and safe (see
    ``valid_request_id``), else a fresh one. When an unexpected exception escapes,
    it stays set in ``request_id_var`` (and in ``request.state``), so the error
    handler that runs outside this middleware still logs and returns it.
    """

    def __init__(self, app: ASGIApp, metrics: CoordinatorMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = valid_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        request_id = request_id or new_request_id()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            self._done(scope, status, time.perf_counter() - started)
        request_id_var.reset(token)

    def _done(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        self._metrics.observe_http(method, template, status, seconds)
        log.log(
            logging.DEBUG if template in _QUIET else logging.INFO,
            "%s %s %d %.1f ms",
            method,
            template,
            status,
            seconds * 1000,
            extra={
                "method": method,
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )
