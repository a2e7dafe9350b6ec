"""Chains, nodes and models the coordinator serves."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from creditshare.coordinator._deps import CallerDep, ServicesDep
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import ModelOut, NodeOut, PublishedIndicatorOut
from creditshare.coordinator._settings import NodeEntry

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/nodes", response_model=list[NodeOut], tags=["registry"])
async def list_nodes(caller: CallerDep, services: ServicesDep) -> list[NodeOut]:
    """Every registered node, with whether it answers: what the background probes and the
    latest real calls saw (never a node call made now, so a dead node costs no wait).

    Only an operator sees each node's ``version``, ``last_error`` and
    ``last_latency_ms``: a node's release and its failures point an attacker at the
    outdated or struggling ones, and the latency of real calls hints at others'
    queries. Everyone else gets null for them (the same schema), and still sees
    whether each node answers and when it last did."""
    operator = caller.role == Role.OPERATOR
    out = []
    for n in services.registry.nodes:
        seen = services.health.status(n.id)
        out.append(
            NodeOut(
                id=n.id,
                chain=n.chain,
                department=n.department,
                address=n.address,
                reachable=seen.reachable,
                last_answer_at=seen.last_answer_at,
                last_latency_ms=seen.last_latency_ms if operator else None,
                version=seen.version if operator else None,
                last_error=seen.last_error if operator else None,
            )
        )
    return out


@router.get("/v1/indicators", response_model=list[PublishedIndicatorOut], tags=["registry"])
async def list_indicators(caller: CallerDep, services: ServicesDep) -> list[PublishedIndicatorOut]:
    """Every indicator the nodes publish (from their department schemas): the names a
    consent may list, with their bands and where they come from.

    Nodes publishing one name with different descriptions or bands (two departments'
    schemas, or a node that is wrong) are listed once per variant, each with its own
    nodes: never one node's bands presented as every node's.
    """
    published, _ = await services.broker.published_indicators(services.registry.nodes)
    out: list[PublishedIndicatorOut] = []
    for name, entries in sorted(published.items()):
        variants: dict[tuple[str, tuple[str, ...]], list[NodeEntry]] = {}
        for node, description, bands in entries:
            variants.setdefault((description, bands), []).append(node)
        out += [
            PublishedIndicatorOut(
                name=name,
                description=description,
                bands=list(bands),
                departments=sorted({node.department for node in nodes}),
                chains=sorted({node.chain for node in nodes}),
                nodes=[node.id for node in nodes],
            )
            for (description, bands), nodes in variants.items()
        ]
    return out


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
            model_type=m.model_type,
            trees=len(m.trees.trees) if m.trees is not None else None,
            created_at=row.created_at if row else None,
        )
        for m, row in catalogue
    ]
