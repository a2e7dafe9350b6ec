"""The coordinator's request id on the node: read from metadata, kept for the call's logs."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from creditshare._logging import REQUEST_ID_METADATA, request_id_var, valid_request_id

__all__ = ["RequestContextInterceptor", "request_id_of"]

log = logging.getLogger("creditshare.node.rpc")
_HEALTH = "/grpc.health.v1.Health/"
#: The coordinator's reachability probe, every few seconds per coordinator process: logged
#: like a health check (not at all), or it would drown the lines that matter.
_PROBE = "/creditshare.v1.NodeInfo/Info"


def request_id_of(metadata: Iterable[Any] | None) -> str | None:
    """The ``x-request-id`` in ``metadata`` when it is a valid request id."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA:
            return valid_request_id(value if isinstance(value, str) else None)
    return None


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Sets ``request_id_var`` for each unary call and logs one line per call.

    Health checks and the coordinator's Info probes pass untouched. The line names the
    method, status code and duration; never request or response content.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if (
            handler is None
            or handler.unary_unary is None
            or method.startswith(_HEALTH)
            or method == _PROBE
        ):
            return handler
        request_id = request_id_of(handler_call_details.invocation_metadata)
        name = method.rsplit("/", 1)[-1]
        behavior: Callable[[Any, Any], Any] = handler.unary_unary

        async def with_context(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                seconds = time.perf_counter() - started
                code_name = code.name.lower() if isinstance(code, grpc.StatusCode) else str(code)
                log.info(
                    "%s %s %.1f ms",
                    name,
                    code_name,
                    seconds * 1000,
                    extra={"rpc": name, "code": code_name, "duration_ms": round(seconds * 1000, 3)},
                )
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            with_context,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
