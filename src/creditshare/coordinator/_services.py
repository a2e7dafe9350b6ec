"""Everything a request handler needs, built once per app from settings and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from sqlalchemy.engine import Engine

from creditshare.coordinator._broker import QueryBroker
from creditshare.coordinator._consents import ConsentService
from creditshare.coordinator._db import make_engine
from creditshare.coordinator._limits import DatabaseWindowLimiter, Limiter, SlidingWindowLimiter
from creditshare.coordinator._paillier_keys import PaillierKeyRegistry
from creditshare.coordinator._participants import ParticipantRegistry
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.coordinator._training import TrainingJobs
from creditshare.crypto import SigningKey
from creditshare.errors import ConfigurationError, InvalidKeyError
from creditshare.ledger import Ledger, LogSigner, SqlLedgerStorage

__all__ = ["Services", "build_services", "load_log_signer", "utc_now"]


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
    ledger: Ledger
    ledger_storage: SqlLedgerStorage
    log_signer: LogSigner
    broker: QueryBroker
    participant_limits: Limiter
    enterprise_limits: Limiter
    training: TrainingJobs
    clock: Callable[[], datetime]


def _limiter(
    settings: CoordinatorSettings,
    engine: Engine,
    clock: Callable[[], datetime],
    monotonic: Callable[[], float],
    scope: str,
    limit: int,
    window: float,
    what: str,
) -> Limiter:
    """In this process, or in the database every replica shares (``rate_limit_store``)."""
    if settings.rate_limit_store == "database":
        return DatabaseWindowLimiter(
            engine, scope, limit, window, lambda: clock().timestamp(), what
        )
    return SlidingWindowLimiter(limit, window, monotonic, what)


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
    return Services(
        settings=settings,
        engine=engine,
        registry=registry,
        participants=participants,
        consents=ConsentService(engine, participants, clock),
        paillier_keys=PaillierKeyRegistry(engine, clock),
        ledger=ledger,
        ledger_storage=storage,
        log_signer=signer,
        broker=broker,
        participant_limits=_limiter(
            settings,
            engine,
            clock,
            monotonic,
            "participant",
            settings.participant_requests_per_minute,
            60.0,
            "participant request rate",
        ),
        enterprise_limits=_limiter(
            settings,
            engine,
            clock,
            monotonic,
            "enterprise",
            settings.enterprise_queries_per_day,
            86_400.0,
            "queries about this enterprise",
        ),
        training=TrainingJobs(
            engine, registry, broker, ledger, clock, idle_seconds=settings.training_job_idle_seconds
        ),
        clock=clock,
    )
