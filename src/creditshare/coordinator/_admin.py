"""Operator tasks done against the coordinator's database directly (no HTTP yet exists
for them): the first operator credential, the ledger signing key, and the ledger audit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from creditshare.coordinator._db import make_engine
from creditshare.coordinator._participants import IssuedKey, ParticipantRegistry, Role
from creditshare.coordinator._services import load_log_signer, utc_now
from creditshare.coordinator._settings import CoordinatorSettings
from creditshare.crypto import SigningKey
from creditshare.errors import ConfigurationError
from creditshare.ledger import LogReport, SqlLedgerStorage, verify_log, verify_subject

__all__ = ["audit_ledger", "bootstrap_operator", "init_log_key"]


def init_log_key(path: Path) -> SigningKey:
    """Create the Ed25519 key that signs tree heads (mode 0600); never overwrites."""
    if path.exists():
        raise ConfigurationError(f"{path} exists; refusing to replace a log signing key")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem())
    return key


def bootstrap_operator(settings: CoordinatorSettings, participant_id: str, name: str) -> IssuedKey:
    """Register an operator and issue its API key: how a new chain gets its first admin."""
    registry = ParticipantRegistry(make_engine(settings.database_url), utc_now)
    registry.register(participant_id, Role.OPERATOR, name)
    return registry.issue_key(participant_id)


def audit_ledger(
    settings: CoordinatorSettings,
    uscc: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LogReport:
    """Recompute every leaf hash, interior node and root and check every signed head (or
    one enterprise's entries), streaming; ``progress(checked, total)`` after each page."""
    storage = SqlLedgerStorage(make_engine(settings.database_url, migrate=False))
    key = load_log_signer(settings).public_key
    return verify_subject(storage, key, uscc) if uscc else verify_log(storage, key, progress)
