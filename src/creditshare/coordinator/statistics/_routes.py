"""GET /v1/statistics/catalogue, POST /v1/statistics, GET /v1/statistics/budget: regulators only."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import ServicesDep, require_roles
from creditshare.coordinator._metrics import CoordinatorMetrics, statistics_outcome
from creditshare.coordinator._participants import Role
from creditshare.coordinator._problems import status_of
from creditshare.coordinator.statistics._bodies import (
    BudgetOut,
    CatalogueOut,
    StatisticsIn,
    StatisticsOut,
)
from creditshare.coordinator.statistics._service import (
    Period,
    budget,
    department_nodes,
    run_cohort_query,
)
from creditshare.errors import CreditShareError

__all__ = ["router"]

router = APIRouter(tags=["statistics"])
Regulator = Annotated[Participant, Depends(require_roles(Role.REGULATOR))]
Department = Annotated[
    str,
    Query(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="a department type, e.g. tax (GET /v1/nodes lists each node's)",
    ),
]


@router.get("/v1/statistics/catalogue", response_model=CatalogueOut)
async def statistics_catalogue(
    department: Department, caller: Regulator, services: ServicesDep
) -> CatalogueOut:
    """What a cohort query over ``department`` may group by and sum, as its nodes publish
    it, with the digest a query signs. Nodes that publish different catalogues: 502
    naming them; none answering: 503."""
    nodes = department_nodes(services, department)
    agreed = await services.statistics.of(department, nodes)
    return CatalogueOut(
        department=department,
        catalogue=json.loads(agreed.data),
        digest=agreed.digest,
        nodes=list(agreed.nodes),
    )


@router.post("/v1/statistics", response_model=StatisticsOut)
async def cohort_statistics(
    body: StatisticsIn, caller: Regulator, services: ServicesDep, request: Request
) -> StatisticsOut:
    """Record the signed cohort query, ask every node of its department in its chains,
    and answer the sums of their encrypted, noisy parts (only the regulator's key opens
    them). Nodes that refused (budget or their own rules) or failed are named and left
    out; every node refusing is a 403 (after a ``refusal`` record)."""
    metrics: CoordinatorMetrics = request.app.state.metrics
    started = time.perf_counter()
    outcome = "error"
    try:
        out = await run_cohort_query(services, caller, body)
        outcome = "answered" if out.additions == len(out.nodes) else "partial"
        return out
    except CreditShareError as exc:
        outcome = statistics_outcome(exc, status_of(exc))
        raise
    finally:
        metrics.observe_statistics(outcome, time.perf_counter() - started)


@router.get("/v1/statistics/budget", response_model=BudgetOut)
async def statistics_budget(
    caller: Regulator,
    services: ServicesDep,
    period: Annotated[
        Period, Query(description="count per calendar month, quarter or year (UTC)")
    ] = "month",
) -> BudgetOut:
    """Per period, the ε of the caller's statistics queries as the ledger records them
    (informational: each node enforces its own allowance)."""
    return await asyncio.to_thread(budget, services, caller, period)
