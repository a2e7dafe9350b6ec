"""The coordinator's FastAPI application: routes per resource, state built in lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

import grpc
from fastapi import Depends, FastAPI, Request

from creditshare.coordinator._broker import QueryBroker, QueryResult
from creditshare.coordinator._problems import NoNodeAnsweredError, install_problem_handlers
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._schemas import (
    Coverage,
    EncryptedIndicatorOut,
    FailedNode,
    ModelOut,
    NodeOut,
    QueryIn,
    QueryOut,
)
from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.crypto import PublicKey
from creditshare.identity import Uscc

__all__ = ["PRESENCE_INDICATOR", "create_app"]

#: Name under which each node's Enc(presence flag) is returned among the indicators.
PRESENCE_INDICATOR = "record_present"
_PRESENCE_BANDS = ["no record", "record held"]


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _broker(request: Request) -> QueryBroker:
    broker: QueryBroker = request.app.state.broker
    return broker


RegistryDep = Annotated[Registry, Depends(_registry)]
BrokerDep = Annotated[QueryBroker, Depends(_broker)]


def _query_out(uscc: str, key: PublicKey, result: QueryResult, broker: QueryBroker) -> QueryOut:
    indicators: list[EncryptedIndicatorOut] = []
    for answer in result.answers:
        node = answer.node
        catalogue = broker.catalogues.get(node.id)
        indicators.append(
            EncryptedIndicatorOut(
                node=node.id,
                chain=node.chain,
                department=node.department,
                name=PRESENCE_INDICATOR,
                description="whether this node holds a record",
                bands=_PRESENCE_BANDS,
                ciphertext=answer.presence.to_text(),
            )
        )
        for name, ciphertext in answer.indicators:
            description, bands = catalogue.indicators.get(name, ("", ())) if catalogue else ("", ())
            indicators.append(
                EncryptedIndicatorOut(
                    node=node.id,
                    chain=node.chain,
                    department=node.department,
                    name=name,
                    description=description,
                    bands=list(bands),
                    ciphertext=ciphertext.to_text(),
                )
            )
    return QueryOut(
        query_id=result.query_id,
        uscc=uscc,
        model_id=result.model.id,
        scale=result.encoding.scale,
        public_key_fingerprint=key.fingerprint(),
        encrypted_score=result.encrypted_score.to_text(),
        score_scale=result.model.score_scale,
        indicators=indicators,
        coverage=Coverage(
            answered=[a.node.id for a in result.answers],
            failed=[
                FailedNode(node=f.node.id, chain=f.node.chain, reason=f.reason)
                for f in result.failures
            ],
        ),
    )


def create_app(
    settings: CoordinatorSettings, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> FastAPI:
    """Build the app; ``interceptors`` wrap every node channel (tracing, or tests that
    record exactly what the coordinator receives)."""
    registry = Registry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = QueryBroker(settings, registry, interceptors)
        await broker.start()
        app.state.broker = broker
        try:
            yield
        finally:
            await broker.close()

    app = FastAPI(
        title="creditshare coordinator",
        version="0.1.0",
        description="Brokers encrypted credit-profile queries across regional credit chains.",
        lifespan=lifespan,
    )
    app.state.registry = registry
    install_problem_handlers(app)

    @app.post("/v1/queries", response_model=QueryOut, tags=["queries"])
    async def create_query(body: QueryIn, broker: BrokerDep) -> QueryOut:
        """Fan out to every node in scope; returns ciphertexts only the requester can open."""
        uscc = str(Uscc.parse(body.uscc))
        key = PublicKey.from_text(body.public_key)
        result = await broker.query(uscc, body.model_id, key, body.chains)
        if not result.answers:
            raise NoNodeAnsweredError(
                [{"node": f.node.id, "reason": f.reason} for f in result.failures]
            )
        return _query_out(uscc, key, result, broker)

    @app.get("/v1/nodes", response_model=list[NodeOut], tags=["registry"])
    async def list_nodes(registry: RegistryDep) -> list[NodeOut]:
        return [
            NodeOut(id=n.id, chain=n.chain, department=n.department, address=n.address)
            for n in registry.nodes
        ]

    @app.get("/v1/models", response_model=list[ModelOut], tags=["registry"])
    async def list_models(registry: RegistryDep) -> list[ModelOut]:
        return [
            ModelOut(
                id=m.id, description=m.description, intercept=m.intercept, score_scale=m.score_scale
            )
            for m in registry.models
        ]

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
