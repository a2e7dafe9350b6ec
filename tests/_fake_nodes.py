"""Pieces shared by the hand-written fake data nodes of integration tests."""

from __future__ import annotations

from typing import Any

import grpc

from creditshare.proto import node_pb2

__all__ = ["NoTreeModels"]


class NoTreeModels:
    """A fake node that holds no tree model: TreeScore is UNIMPLEMENTED, as a node that
    predates tree models would answer. Put it before the servicer base class."""

    async def TreeScore(  # noqa: N802 - gRPC method name
        self, request: node_pb2.TreeScoreRequest, context: Any
    ) -> node_pb2.TreeScoreResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fake node holds no tree model")
        raise AssertionError("unreachable")
