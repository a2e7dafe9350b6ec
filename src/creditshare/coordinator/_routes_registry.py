"""Chains, nodes and models the coordinator serves."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from creditshare.coordinator._deps import CallerDep, ServicesDep
from creditshare.coordinator._schemas import ModelOut, NodeOut

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/nodes", response_model=list[NodeOut], tags=["registry"])
async def list_nodes(caller: CallerDep, services: ServicesDep) -> list[NodeOut]:
    return [
        NodeOut(id=n.id, chain=n.chain, department=n.department, address=n.address)
        for n in services.registry.nodes
    ]


@router.get("/v1/models", response_model=list[ModelOut], tags=["registry"])
async def list_models(caller: CallerDep, services: ServicesDep) -> list[ModelOut]:
    catalogue = await asyncio.to_thread(services.registry.catalogue)  # one query, off the loop
    return [
        ModelOut(
            id=m.id,
            description=m.description,
            intercept=m.intercept,
            score_scale=m.score_scale,
            origin="trained" if row else "published",
            trained_by=row.trained_by if row else None,
            metrics=dict(row.metrics) if row else {},
            features=dict(row.features) if row else {},
        )
        for m, row in catalogue
    ]
