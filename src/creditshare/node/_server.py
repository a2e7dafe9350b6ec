"""Running a data node: storage, scoring engine, gRPC service and health, wired once."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from creditshare.node._importer import ImportSummary, import_files
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import DataNodeService
from creditshare.node._settings import NodeSettings
from creditshare.node._storage import RecordStore, make_engine
from creditshare.proto import node_pb2_grpc

__all__ = ["SERVICE_NAME", "build_server", "import_into_node", "serve"]

SERVICE_NAME = "creditshare.v1.DataNode"
log = logging.getLogger("creditshare.node")


def _store(settings: NodeSettings) -> RecordStore:
    return RecordStore(make_engine(settings.database_url))


def import_into_node(settings: NodeSettings, paths: list[Path]) -> ImportSummary:
    return import_files(_store(settings), settings.department_schema, paths)


async def build_server(settings: NodeSettings) -> tuple[grpc.aio.Server, int]:
    """Create and start the server; returns it with the port actually bound."""
    engine = ScoreEngine(
        settings.department_schema,
        _store(settings),
        {model_id: shard.weights for model_id, shard in settings.models.items()},
    )
    server = grpc.aio.server()
    node_pb2_grpc.add_DataNodeServicer_to_server(DataNodeService(settings, engine), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise OSError(f"could not bind {settings.listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def serve(settings: NodeSettings, grace_seconds: float = 5.0) -> None:
    server, port = await build_server(settings)
    log.info(
        "node %s (%s, %s) listening on port %d",
        settings.node_id,
        settings.department,
        settings.chain.value,
        port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace_seconds)
