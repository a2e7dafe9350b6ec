"""The coordinator's FastAPI application: routers per resource, services built once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import grpc
from fastapi import FastAPI, Request
from starlette.types import Scope

from creditshare import __version__
from creditshare._logging import new_request_id, request_id_var
from creditshare.coordinator import (
    _routes_credentials,
    _routes_keys,
    _routes_ledger,
    _routes_operations,
    _routes_queries,
    _routes_registry,
    _routes_training,
    _routes_tree_training,
    _routes_trust,
)
from creditshare.coordinator._deps import authenticated
from creditshare.coordinator._metrics import CoordinatorMetrics
from creditshare.coordinator._openapi import install_docs, install_openapi
from creditshare.coordinator._participants import Role
from creditshare.coordinator._problems import install_problem_handlers
from creditshare.coordinator._request_context import RequestContextMiddleware
from creditshare.coordinator._request_guard import RequestGuardMiddleware
from creditshare.coordinator._services import build_services, check_ledger, utc_now
from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.coordinator.monitoring import _routes as _routes_monitoring
from creditshare.coordinator.monitoring import _routes_alerts
from creditshare.coordinator.statistics import _routes as _routes_statistics
from creditshare.errors import PermissionDeniedError

__all__ = ["create_app"]


def create_app(
    settings: CoordinatorSettings,
    *,
    clock: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> FastAPI:
    """Build the app; ``interceptors`` wrap every node channel (tracing, or tests that
    record exactly what the coordinator receives); ``clock`` drives consent expiry,
    record times and tree-head timestamps.

    Every node call carries the request id (``x-request-id`` metadata) and is
    counted in the app's own metrics registry (``app.state.metrics``)."""
    services = build_services(settings, clock, monotonic, interceptors)
    metrics = CoordinatorMetrics(services.ledger.size, services.training.status_counts)
    services.broker.metrics = metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The start-up Describe calls get a request id of their own, for the nodes' logs.
        token = request_id_var.set(f"startup-{new_request_id()[:16]}")
        try:
            await services.broker.start()
        finally:
            request_id_var.reset(token)
        services.training.start()  # fails jobs that stopped making progress
        interval = settings.witness_interval_seconds
        witnessing = asyncio.create_task(services.witnesses.run(interval)) if interval > 0 else None
        every = settings.revocation_relay_interval_seconds
        relaying = asyncio.create_task(services.revocations.run(every)) if every > 0 else None
        probe_every = settings.node_probe_interval_seconds
        probing = asyncio.create_task(services.health.run(probe_every)) if probe_every > 0 else None
        services.monitoring.start()  # webhook deliveries; cycles every interval (if > 0)
        try:
            await check_ledger(services)
            yield
        finally:
            await services.monitoring.stop()
            for task in (witnessing, relaying, probing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await services.witnesses.stop()
            await services.training.stop()
            await services.broker.close()

    app = FastAPI(
        title="creditshare coordinator",
        version=__version__,
        description="Brokers consented, recorded, encrypted credit-profile queries across "
        "regional credit chains.",
        lifespan=lifespan,
        # FastAPI's Swagger UI and ReDoc load their scripts from a public CDN (blank on an
        # intranet): install_docs serves Swagger UI from the package instead.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.metrics = metrics
    install_problem_handlers(app)
    install_openapi(app, metrics_need_key=settings.metrics_require_operator_key)
    install_docs(app)

    async def authorise_large(scope: Scope) -> None:
        caller = await authenticated(Request(scope), services)
        if caller.role != Role.BUREAU:
            raise PermissionDeniedError("only a bureau may send large training bodies")

    # Added first, so it runs inside the request context (request id, access log, metrics).
    app.add_middleware(
        RequestGuardMiddleware,
        default=settings.max_body_bytes,
        large=settings.max_training_body_bytes,
        authorise_large=authorise_large,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    for module in (
        _routes_operations,
        _routes_queries,
        _routes_keys,
        _routes_credentials,
        _routes_trust,
        _routes_ledger,
        _routes_training,
        _routes_tree_training,
        _routes_registry,
        _routes_monitoring,
        _routes_alerts,
        _routes_statistics,
    ):
        app.include_router(module.router)
    return app
