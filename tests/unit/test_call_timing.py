"""The coordinator's one interceptor on a node's channel: request id, timing, listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from creditshare._logging import REQUEST_ID_METADATA, request_id_var
from creditshare.coordinator.relay._call_timing import NodeCallTimer


class _Details:
    """What grpc.aio hands an interceptor: a namedtuple-like with ``_replace``."""

    def __init__(self, method: bytes, metadata: Any) -> None:
        self.method, self.metadata = method, metadata

    def _replace(self, **changes: Any) -> _Details:
        return _Details(changes.get("method", self.method), changes.get("metadata", self.metadata))


class _Listener:
    def __init__(self) -> None:
        self.ended: list[tuple[str, str, grpc.StatusCode]] = []

    def call_ended(
        self,
        node: str,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        error: grpc.aio.AioRpcError | None,
    ) -> None:
        assert seconds >= 0
        self.ended.append((node, method, code))


def _call(
    timer: NodeCallTimer, metadata: Any, request_id: str | None
) -> tuple[list[tuple[str, str]], object]:
    sent: list[tuple[str, str]] = []

    async def answer() -> str:
        return "answer"

    async def continuation(details: _Details, request: object) -> Awaitable[str]:
        sent.extend((k, v) for k, v in details.metadata or ())
        return asyncio.ensure_future(answer())

    async def run() -> object:
        token = request_id_var.set(request_id)
        try:
            go: Callable[[Any, Any], Awaitable[Any]] = continuation
            details = _Details(b"/creditshare.v1.DataNode/Score", metadata)
            return await timer.intercept_unary_unary(go, details, object())
        finally:
            request_id_var.reset(token)

    return sent, asyncio.run(run())


def test_the_request_id_is_sent_once_replacing_any_other_and_the_call_is_timed() -> None:
    listener = _Listener()
    timer = NodeCallTimer("yrd-tax", [listener])
    metadata = grpc.aio.Metadata(("x-trace", "t1"), (REQUEST_ID_METADATA, "spoofed"))
    sent, _ = _call(timer, metadata, "req-1")
    assert sent == [("x-trace", "t1"), (REQUEST_ID_METADATA, "req-1")]
    assert listener.ended == [("yrd-tax", "/creditshare.v1.DataNode/Score", grpc.StatusCode.OK)]


def test_without_a_request_or_listeners_the_call_passes_through() -> None:
    sent, _ = _call(NodeCallTimer("yrd-tax", []), None, None)
    assert sent == []
    sent, _ = _call(NodeCallTimer("yrd-tax", []), None, "req-2")
    assert sent == [(REQUEST_ID_METADATA, "req-2")]
