"""Probes and metrics for operators: /healthz, /readyz, /metrics.

/healthz and /readyz need no credentials and say nothing secret: a status and,
when not ready, which check failed (its exception class, never its message,
which could quote a database URL). Ledger errors are the exception: their
messages are ours, name sizes and indices only, and tell the operator what does
not match and which command inspects it, so /readyz gives them as ``reasons``.
/readyz also says per chain whether any node answers (chain names only; which node
and why is in the authenticated GET /v1/nodes).
/metrics carries aggregate counts only (no enterprise or participant
identifiers); it is open unless
``metrics_require_operator_key`` is set, so keep it off public listeners (the
proxy in front of the coordinator should not forward it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.exposition import choose_encoder
from sqlalchemy import text

from creditshare.coordinator._deps import ServicesDep, authenticated
from creditshare.coordinator._metrics import CoordinatorMetrics
from creditshare.coordinator._participants import Role
from creditshare.coordinator._services import Services
from creditshare.errors import LedgerError, PermissionDeniedError

__all__ = ["router"]

router = APIRouter(tags=["operations"])
log = logging.getLogger("creditshare.coordinator")

#: A check that takes longer than this has failed (a probe must answer promptly).
CHECK_TIMEOUT_SECONDS = 5.0


def _database(services: Services) -> None:
    with services.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def _ledger(services: Services) -> None:
    """The ledger signs (no integrity check failed, and the database still holds the
    head this process last signed or verified); the latest head reads and is signed by
    this coordinator's key (a replica with another key would append heads every node
    refuses), and the records it covers exist."""
    services.ledger.check_health()
    head = services.ledger_storage.latest_head()
    size = services.ledger.size()
    if head is None:
        return
    head.verify(services.log_signer.public_key)
    if head.size > size:
        raise LedgerError(f"the latest tree head covers {head.size} records, the ledger {size}")


async def _check(name: str, check: Callable[[], None]) -> tuple[str, str] | None:
    """None when ``check`` passed, else the exception's class name (logged in full) and,
    for a ``LedgerError``, its message (empty otherwise)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("readiness check %s failed: %s", name, exc)
        if isinstance(exc, TimeoutError):
            return "Timeout", ""
        return type(exc).__name__, str(exc) if isinstance(exc, LedgerError) else ""
    return None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Depends on nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a check failed"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness: the database answers a trivial query and the ledger is readable and
    signs (``reasons.ledger`` says what does not match when it refuses to).

    ``chains`` says, per chain, whether any of its nodes answers (from the background
    probes: no node is called now). A chain whose every node is unreachable makes the
    status ``degraded`` with 200, not 503: the coordinator still serves the other
    chains, consents and the ledger, so it keeps its place behind the load balancer;
    the operator's alert keys on ``degraded``.
    """
    names = ("database", "ledger")
    errors = await asyncio.gather(
        _check("database", lambda: _database(services)),
        _check("ledger", lambda: _ledger(services)),
    )
    failed = {name: error for name, error in zip(names, errors, strict=True) if error}
    chains = services.health.chains()
    degraded = any(status != "ok" for status in chains.values())
    body: dict[str, object] = {
        "status": "unavailable" if failed else "degraded" if degraded else "ok",
        "checks": {name: "fail" if name in failed else "ok" for name in names},
        "chains": chains,
    }
    if failed:
        body["errors"] = {name: error for name, (error, _) in failed.items()}
        reasons = {name: reason for name, (_, reason) in failed.items() if reason}
        if reasons:
            body["reasons"] = reasons
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus text format (or OpenMetrics, if the scraper asks for it); the ledger
    size and training jobs are read from the database now."""
    if services.settings.metrics_require_operator_key:
        caller = await authenticated(request, services)
        if caller.role != Role.OPERATOR:
            raise PermissionDeniedError("only the chain operator may read metrics")
    registry = _metrics_of(request).registry
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await asyncio.to_thread(encode, registry)
    return Response(body, headers={"Content-Type": content_type})


def _metrics_of(request: Request) -> CoordinatorMetrics:
    metrics: CoordinatorMetrics = request.app.state.metrics
    return metrics
