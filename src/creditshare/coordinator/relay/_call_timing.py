"""Every call on a node's channel: the request id sent, the call timed once, and its
outcome told to whoever keeps count.

The metrics (counts and durations by method and status) and the node health record
(reachability, last latency) both want each call's outcome, and the node wants the
coordinator's request id for its logs. One interceptor does all three: each interceptor
on a grpc.aio channel wraps every call in another layer of coroutines (about 25 us of
CPU per call, measured), and a query to 45 nodes makes 45 calls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from creditshare._logging import REQUEST_ID_METADATA, request_id_var

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


def with_request_id(client_call_details: Any, request_id: str) -> Any:
    """The call's details with ``x-request-id: request_id`` as its only request id."""
    metadata = grpc.aio.Metadata()
    for key, value in client_call_details.metadata or ():
        if key != REQUEST_ID_METADATA:
            metadata.add(key, value)
    metadata.add(REQUEST_ID_METADATA, request_id)
    return client_call_details._replace(metadata=metadata)


class NodeCallTimer(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the current request id (``request_id_var``) as ``x-request-id`` metadata,
    times each unary call on one node's channel and tells every listener."""

    def __init__(self, node: str, listeners: Sequence[CallListener]) -> None:
        self._node = node
        self._listeners = tuple(listeners)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        request_id = request_id_var.get()
        if request_id is not None:
            client_call_details = with_request_id(client_call_details, request_id)
        if not self._listeners:
            return await continuation(client_call_details, request)
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
