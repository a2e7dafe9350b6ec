"""Running a data node: storage, scoring engine, gRPC service and health, wired once."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine, make_url

from creditshare import migrations
from creditshare.errors import ConfigurationError
from creditshare.ledger import TrustedHeadTracker
from creditshare.node._authority import RequestAuthority
from creditshare.node._authority_store import (
    RefusalLog,
    RefusalRow,
    RevokedConsents,
    StoredRevocationLists,
)
from creditshare.node._cubes import CubeStore
from creditshare.node._encryptors import EncryptorCache
from creditshare.node._importer import ImportSummary, import_files
from creditshare.node._privacy_budget import (
    BudgetTotal,
    PeriodTotal,
    PrivacyBudget,
    PrivacySpendRow,
)
from creditshare.node._receipts import ReceiptChecker
from creditshare.node._request_context import RequestContextInterceptor
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import DataNodeService, NodeInfoService
from creditshare.node._settings import NodeSettings
from creditshare.node._statistics import CohortStatisticsService
from creditshare.node._storage import (
    ImportBatch,
    RecordStore,
    ShardStore,
    make_engine,
    make_read_only_engine,
)
from creditshare.node._training import TrainingService
from creditshare.node._trust import AccessLog, AccessLogRow, TrustedHeadStore
from creditshare.node._witness import NodeWitness, load_witness_key
from creditshare.node.monitoring import MonitoringService, MonitoringStore
from creditshare.pki import CredentialVerifier, server_credentials
from creditshare.proto import (
    GRPC_MESSAGE_OPTIONS,
    monitoring_pb2_grpc,
    node_pb2_grpc,
    statistics_pb2_grpc,
    training_pb2_grpc,
)
from creditshare.statistics import Catalogue

__all__ = [
    "SERVICE_NAME",
    "access_log_entries",
    "build_server",
    "import_history",
    "import_into_node",
    "privacy_spend_entries",
    "refusal_log_entries",
    "serve",
]

SERVICE_NAME = "creditshare.v1.DataNode"
log = logging.getLogger("creditshare.node")


def _store(settings: NodeSettings) -> RecordStore:
    return RecordStore(make_engine(settings.database_url))


def import_into_node(
    settings: NodeSettings, paths: list[Path], *, allow_empty: bool = False
) -> ImportSummary:
    """Import ``paths`` as the department's new snapshot (see ``import_files``), then
    build its statistics cube (after the import committed: a failed build loses nothing,
    and the node builds the latest snapshot's cube when a query first needs it)."""
    store = _store(settings)
    summary = import_files(
        store,
        settings.department_schema,
        paths,
        allow_empty=allow_empty,
        max_rows=settings.import_max_rows,
    )
    try:
        _cube_store(settings, store.engine).build_latest()
    except Exception:  # the import stands; the cube is built again on first use
        log.exception("the statistics cube of snapshot %d could not be built", summary.batch_id)
    return summary


def _cube_store(
    settings: NodeSettings, engine: Engine, clock: Callable[[], datetime] | None = None
) -> CubeStore:
    department = settings.department_schema
    return CubeStore(engine, department, Catalogue.of(department), clock or utc_now)


def _read_only_engine(settings: NodeSettings, command: str) -> Engine:
    """An engine for a tool that only reads, refused with what to run when the database
    is not at the newest schema: such a tool must not change the schema behind a running
    node's back (a node of an older release may still be serving), and an SQL error
    about a missing table tells an operator nothing."""
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).is_file():
        # Connecting would create an empty file there: a typo'd path is not a database.
        raise ConfigurationError(f"`{command}`: there is no node database at {file}")
    engine = make_read_only_engine(settings.database_url)  # cannot write, even by mistake
    now, newest = migrations.current(engine, "node"), migrations.head("node")
    if now != newest:
        engine.dispose()
        state = "has never been migrated" if now is None else f"is at revision {now}"
        raise ConfigurationError(
            f"`{command}`: the node database {state}, not {newest}: run `creditshare db "
            "upgrade node --config <the node's settings>` (starting the node or `creditshare "
            "node import` also migrates it)"
        )
    return engine


def import_history(settings: NodeSettings, limit: int = 100) -> list[ImportBatch]:
    """The node's snapshots, newest first, with what each added, changed and removed."""
    engine = _read_only_engine(settings, "creditshare node imports")
    try:
        return RecordStore(engine).snapshots(limit)
    finally:  # one-shot readers (the CLI, a console page each view) keep no pool open
        engine.dispose()


def access_log_entries(settings: NodeSettings, limit: int = 1000) -> list[AccessLogRow]:
    engine = _read_only_engine(settings, "creditshare node access-log")
    try:
        return AccessLog(engine, utc_now).entries(limit)
    finally:
        engine.dispose()


def refusal_log_entries(settings: NodeSettings, limit: int = 1000) -> list[RefusalRow]:
    """The requests this node refused (newest first): forged, altered, revoked, replayed."""
    engine = _read_only_engine(settings, "creditshare node refusals")
    try:
        return RefusalLog(engine, utc_now).entries(limit)
    finally:
        engine.dispose()


def privacy_spend_entries(
    settings: NodeSettings, limit: int = 1000
) -> tuple[list[BudgetTotal], list[PeriodTotal], list[PrivacySpendRow]]:
    """Per regulator and period what its statistics queries spent here (all of them),
    per period what all regulators together spent (the node-wide cap's count), and the
    newest ``limit`` spends one by one."""
    engine = _read_only_engine(settings, "creditshare node privacy-budget")
    try:
        budget = _privacy_budget(settings, engine, utc_now)
        return budget.totals(), budget.period_totals(), budget.entries(limit)
    finally:
        engine.dispose()


def _privacy_budget(
    settings: NodeSettings, engine: Engine, clock: Callable[[], datetime]
) -> PrivacyBudget:
    return PrivacyBudget(
        engine,
        settings.stats_epsilon_per_period,
        clock,
        total=settings.stats_epsilon_total_per_period,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


async def build_server(
    settings: NodeSettings,
    clock: Callable[[], datetime] = utc_now,
    encryptors: EncryptorCache | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Create and start the server; returns it with the port actually bound.

    ``encryptors`` lets the caller own (and close) the table cache; by default one is
    made from the settings (its builder thread is a daemon that ends when idle).
    """
    db = make_engine(settings.database_url)
    records, shards = RecordStore(db), ShardStore(db)
    encryptors = encryptors or _encryptor_cache(settings)
    engine = ScoreEngine(
        settings.department_schema,
        records,
        {model_id: shard.weights for model_id, shard in settings.models.items()},
        shards,
        encryptors,
    )
    heads = TrustedHeadStore(db)
    tracker = TrustedHeadTracker(load=heads.load, save=heads.save)
    authority = _authority(settings, db, clock)
    checker = ReceiptChecker(
        settings.log_key,
        tracker,
        settings.chain,
        clock,
        timedelta(seconds=settings.receipt_max_age_seconds),
        authority,
    )
    access_log = AccessLog(db, clock, heads)
    refusal_log = RefusalLog(db, clock)
    witness_key = None
    if settings.witness_key_file is not None:
        witness_key = load_witness_key(settings.witness_key_file)
    witness = NodeWitness(settings.node_id, witness_key, settings.log_key, tracker, clock)
    service = DataNodeService(
        settings, engine, checker, access_log, tracker, authority, refusal_log, witness
    )
    server = grpc.aio.server(
        options=GRPC_MESSAGE_OPTIONS, interceptors=[RequestContextInterceptor()]
    )
    node_pb2_grpc.add_DataNodeServicer_to_server(service, server)
    node_pb2_grpc.add_NodeInfoServicer_to_server(NodeInfoService(settings.node_id), server)
    training = TrainingService(
        settings.node_id,
        settings.department_schema,
        records,
        shards,
        engine,
        checker,
        access_log,
        encryption_workers=settings.training_encryption_workers,
        job_idle_seconds=settings.training_job_idle_seconds,
        refusal_log=refusal_log,
    )
    training_pb2_grpc.add_TrainingServicer_to_server(training, server)
    monitoring = MonitoringService(
        settings.node_id,
        settings.department_schema,
        MonitoringStore(db, clock),
        checker,
        authority,
        refusal_log,
        engine,
    )
    monitoring_pb2_grpc.add_MonitoringServicer_to_server(monitoring, server)
    cubes = _cube_store(settings, db, clock)
    statistics = CohortStatisticsService(
        settings,
        Catalogue.of(settings.department_schema),
        checker,
        access_log,
        refusal_log,
        _privacy_budget(settings, db, clock),
        cubes,
        encryptors,
    )
    statistics_pb2_grpc.add_CohortStatisticsServicer_to_server(statistics, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if settings.tls is not None:
            tls = settings.tls
            port = server.add_secure_port(
                settings.listen, server_credentials(tls.cert, tls.key, tls.ca)
            )
        else:
            port = server.add_insecure_port(settings.listen)
    except RuntimeError:  # grpc's "Failed to bind": say it plainly, without a traceback
        port = 0
    if port == 0:
        raise ConfigurationError(
            f"could not bind {settings.listen}: the address is in use or not available here"
        )
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def _authority(
    settings: NodeSettings, db: Engine, clock: Callable[[], datetime]
) -> RequestAuthority:
    """The node's own request checks, with the revocation lists it accepted before.

    Accepted lists are written back as they arrive, so a restarted node never trusts an
    older list than it once held (a relay cannot roll revocations back across a reboot).
    """
    stored = StoredRevocationLists(db)
    verifier = CredentialVerifier.from_file(
        settings.credential_ca_file,
        max_revocation_age=timedelta(seconds=settings.revocation_max_age_seconds),
        clock=clock,
    )
    for data in stored.load():
        verifier.update_revocations(data)
    return RequestAuthority(
        verifier,
        settings.chain,
        settings.node_id,
        RevokedConsents(db),
        clock,
        stored,
    )


def _encryptor_cache(settings: NodeSettings) -> EncryptorCache:
    return EncryptorCache(settings.fast_encryption_keys, enabled=settings.fast_encryption)


async def serve(settings: NodeSettings, grace_seconds: float | None = None) -> None:
    """Serve until SIGTERM or SIGINT; then refuse new calls and give the ones in flight
    ``grace_seconds`` (default: the ``shutdown_grace_seconds`` setting) to finish."""
    grace = settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
    encryptors = _encryptor_cache(settings)
    server, port = await build_server(settings, encryptors=encryptors)
    log.info(
        "node %s (%s, %s) listening on port %d",
        settings.node_id,
        settings.department_schema.id,
        settings.chain.value,
        port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node %s stopping: in-flight calls get up to %.0f s", settings.node_id, grace)
    # Tables are dropped first: a build under way runs on a daemon thread that neither
    # this nor the interpreter's exit waits for.
    encryptors.close()
    await server.stop(grace)
    log.info("node %s stopped", settings.node_id)
