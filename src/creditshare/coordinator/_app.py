"""The coordinator's FastAPI application: routers per resource, services built once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import grpc
from fastapi import FastAPI

from creditshare.coordinator import (
    _routes_ledger,
    _routes_queries,
    _routes_registry,
    _routes_training,
    _routes_trust,
)
from creditshare.coordinator._problems import install_problem_handlers
from creditshare.coordinator._services import build_services, utc_now
from creditshare.coordinator._settings import CoordinatorSettings

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
    record times and tree-head timestamps."""
    services = build_services(settings, clock, monotonic, interceptors)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await services.broker.start()
        try:
            yield
        finally:
            await services.broker.close()

    app = FastAPI(
        title="creditshare coordinator",
        version="0.2.0",
        description="Brokers consented, recorded, encrypted credit-profile queries across "
        "regional credit chains.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_problem_handlers(app)
    for module in (
        _routes_queries,
        _routes_trust,
        _routes_ledger,
        _routes_training,
        _routes_registry,
    ):
        app.include_router(module.router)
    return app
