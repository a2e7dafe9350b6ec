"""Every call on a node's channel, timed once and told to whoever keeps count.

The metrics (counts and durations by method and status) and the node health record
(reachability, last latency) both want each call's outcome; one interceptor times the
call and hands the outcome to each listener, so a query's node calls are not wrapped
and timed twice on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

__all__ = ["CallListener", "NodeCallTimer"]


class CallListener(Protocol):
    def call_ended(
        self,
        node: str,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        error: grpc.aio.AioRpcError | None,
    ) -> None:
        """A call to ``node``'s ``method`` (its full path, ``/pkg.Service/Method``)
        ended with ``code`` after ``seconds``; ``error`` is the call's error, if any."""


class NodeCallTimer(grpc.aio.UnaryUnaryClientInterceptor):
    """Times each unary call on one node's channel and tells every listener."""

    def __init__(self, node: str, listeners: Sequence[CallListener]) -> None:
        self._node = node
        self._listeners = tuple(listeners)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        error: grpc.aio.AioRpcError | None = None
        try:
            call = await continuation(client_call_details, request)
            await call  # the response, or the call's AioRpcError
            code = grpc.StatusCode.OK
            return call
        except grpc.aio.AioRpcError as exc:
            code, error = exc.code(), exc
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            seconds = time.perf_counter() - started
            for listener in self._listeners:
                listener.call_ended(self._node, name, code, seconds, error)
