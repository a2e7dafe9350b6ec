"""Page a node's blinded ids out of its PSI run over gRPC, as the coordinator relays them."""

from __future__ import annotations

from typing import Any

from creditshare.federated import MAX_PSI_CHUNK
from creditshare.proto import training_pb2


async def node_points(stub: Any, job_id: str, limit: int = MAX_PSI_CHUNK) -> list[bytes]:
    """Every point of the node's set for ``job_id`` (after the bureau's last chunk), in the
    node's order, page by page until the page marked last."""
    points: list[bytes] = []
    last = False
    while not last:
        reply = await stub.PsiPoints(
            training_pb2.PsiPointsRequest(job_id=job_id, offset=len(points), limit=limit)
        )
        points += reply.node_blinded
        last = reply.last
    return points
