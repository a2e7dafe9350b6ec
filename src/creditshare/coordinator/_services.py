"""Everything a request handler needs, built once per app from settings and a clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy.engine import Engine

from creditshare.coordinator._consents import ConsentService
from creditshare.coordinator._cosignatures import CosignatureStore
from creditshare.coordinator._credentials import CredentialStore
from creditshare.coordinator._db import make_engine
from creditshare.coordinator._limits import Limits, build_limits
from creditshare.coordinator._node_health import NodeHealth
from creditshare.coordinator._paillier_keys import PaillierKeyRegistry
from creditshare.coordinator._participants import ParticipantRegistry
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._revocation_relay import RevocationRelay
from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.coordinator._training import TrainingJobs
from creditshare.coordinator._witness import WitnessCollector
from creditshare.coordinator.monitoring import Monitoring
from creditshare.coordinator.relay import QueryBroker
from creditshare.coordinator.statistics import StatisticsCatalogues
from creditshare.crypto import SigningKey
from creditshare.errors import ConfigurationError, InvalidKeyError
from creditshare.ledger import Ledger, LogSigner, SqlLedgerStorage

__all__ = ["Services", "build_services", "check_ledger", "load_log_signer", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_log_signer(settings: CoordinatorSettings) -> LogSigner:
    path = settings.log_signing_key_file
    try:
        key = SigningKey.from_pem(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"log signing key not found: {path}") from None
    except InvalidKeyError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    return LogSigner(key.cryptography_key)


@dataclass(slots=True)
class Services:
    settings: CoordinatorSettings
    engine: Engine
    registry: Registry
    participants: ParticipantRegistry
    consents: ConsentService
    paillier_keys: PaillierKeyRegistry
    credentials: CredentialStore
    ledger: Ledger
    ledger_storage: SqlLedgerStorage
    log_signer: LogSigner
    broker: QueryBroker
    limits: Limits
    training: TrainingJobs
    clock: Callable[[], datetime]
    witnesses: WitnessCollector
    revocations: RevocationRelay
    #: Whether each node answers (probed in the background; every node call updates it).
    health: NodeHealth
    #: The nodes' statistics catalogues (a regulator's cohort queries).
    statistics: StatisticsCatalogues
    #: Post-loan monitoring (it needs the other services, so it is set right after them).
    monitoring: Monitoring = field(init=False)


def build_services(
    settings: CoordinatorSettings,
    clock: Callable[[], datetime] = utc_now,
    monotonic: Callable[[], float] = time.monotonic,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> Services:
    engine = make_engine(settings.database_url)
    registry = Registry(settings, engine)
    participants = ParticipantRegistry(engine, clock)
    signer = load_log_signer(settings)
    storage = SqlLedgerStorage(engine)
    ledger = Ledger(storage, signer, clock)
    broker = QueryBroker(settings, registry, ledger, interceptors)
    health = NodeHealth(
        registry,
        clock,
        settings.node_probe_timeout_seconds,
        lambda node_id: broker.channels.info[node_id],
    )
    broker.channels.listeners.append(health)
    credentials = CredentialStore(
        engine, clock, monotonic, timedelta(seconds=settings.request_max_skew_seconds)
    )
    services = Services(
        settings=settings,
        engine=engine,
        registry=registry,
        participants=participants,
        consents=ConsentService(engine, participants, clock),
        paillier_keys=PaillierKeyRegistry(engine, clock, participants.locked),
        credentials=credentials,
        ledger=ledger,
        ledger_storage=storage,
        log_signer=signer,
        broker=broker,
        limits=build_limits(settings, engine, lambda: clock().timestamp(), monotonic),
        training=TrainingJobs(
            engine,
            registry,
            broker,
            ledger,
            clock,
            idle_seconds=settings.training_job_idle_seconds,
            jobs_per_bureau=settings.training_jobs_per_bureau,
        ),
        clock=clock,
        witnesses=WitnessCollector(
            registry,
            broker,
            ledger,
            CosignatureStore(engine),
            settings.node_deadline_seconds,
            clock,
        ),
        revocations=RevocationRelay(engine, broker, registry, credentials, clock),
        health=health,
        statistics=StatisticsCatalogues(
            broker.channels.statistics, settings.node_deadline_seconds, monotonic
        ),
    )
    services.monitoring = Monitoring(services, clock)
    return services


async def check_ledger(services: Services) -> None:
    """The start-up check, off the event loop (O(n): it reads and hashes every entry):
    storage must reproduce its latest signed head, and no node may hold a head signed
    by this log that storage does not reproduce (``broker.start`` asked them): that is
    what a log whose last entries were deleted with their heads looks like. A failure
    is kept: appends refuse and /readyz says why until the coordinator is restarted."""
    ledger = services.ledger
    await asyncio.to_thread(ledger.check_storage)
    witnesses = {f"data node {n}": head for n, head in services.broker.witness_heads().items()}
    await asyncio.to_thread(ledger.check_witnesses, witnesses)
