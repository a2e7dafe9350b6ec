"""Real federations on loopback: node processes, a coordinator process, HTTP in between."""

from __future__ import annotations

import base64
import csv
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gmpy2
import httpx
import pytest
from fastapi import FastAPI

from creditshare._canonical import format_time
from creditshare.client import CreditShareClient, Identity, sign_job, sign_query
from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import AlertPrivateKey, PrivateKey, SigningKey
from creditshare.demo import Federation, FederationLayout, PlaintextOracle
from creditshare.departments import DEFAULT_INTERCEPT
from creditshare.errors import CreditShareError
from creditshare.identity import Chain
from creditshare.synth import generate

from .._serving import serve_in_thread

E2E_DEPARTMENTS = ("tax", "market", "court")


def signed_query_body(identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the fields the requester signs. A body a test made malformed on
    purpose (it cannot be signed) gets well-formed placeholders instead, so the
    coordinator's answer is about the fault under test and not the missing signature."""
    try:
        return body | sign_query(identity, body)
    except (KeyError, TypeError, CreditShareError):
        return body | placeholder_signature()


def signed_job_body(identity: Identity, body: dict[str, Any]) -> dict[str, Any]:
    """A POST /v1/training-jobs ``body`` with the fields the bureau signs (placeholders
    for a body made malformed on purpose, as for queries)."""
    try:
        return body | sign_job(identity, body)
    except (KeyError, TypeError, CreditShareError):
        return body | placeholder_signature("job_id")


def placeholder_signature(id_field: str = "query_id") -> dict[str, str]:
    """Signed fields of the right shape that verify for nobody: for requests a test
    expects refused before any signature is checked."""
    fields = {
        id_field: secrets.token_hex(16),
        "requested_at": format_time(datetime.now(UTC)),
        "signature": base64.b64encode(bytes(64)).decode("ascii"),
    }
    if id_field == "job_id":  # a training job signs its config's hash too
        fields["config_sha256"] = "0" * 64
    return fields


def fresh_modulus() -> int:
    """A well-formed 2048-bit Paillier modulus (two random 1024-bit primes), made in
    milliseconds: for tests that register a key they never decrypt with."""
    while True:
        p, q = (int(gmpy2.next_prime(secrets.randbits(1024) | (1 << 1023))) for _ in range(2))
        if (p * q).bit_length() == 2048:
            return p * q


def register_fresh_key(url: str, api_key: str) -> str:
    """Register a fresh key for the participant behind ``api_key``; its fingerprint."""
    n = fresh_modulus()
    response = httpx.post(
        f"{url}/v1/paillier-keys",
        json={"public_key": base64.b64encode(n.to_bytes(256, "big")).decode()},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    fingerprint: str = response.json()["fingerprint"]
    return fingerprint


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Federation]:
    """Three chains × three departments = nine node processes plus the coordinator."""
    layout = FederationLayout.write(
        tmp_path_factory.mktemp("federation"), data_dir, departments=E2E_DEPARTMENTS
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="session")
def oracle(federation: Federation) -> PlaintextOracle:
    return PlaintextOracle(federation.layout, DEFAULT_INTERCEPT)


class Trust:
    """Participants and consents on a running federation, made through the public API."""

    def __init__(self, federation: Federation, bank_key: PrivateKey, bank_id: str) -> None:
        self.url = federation.layout.coordinator_url
        self.layout = federation.layout
        self.operator_api_key = federation.layout.bootstrap_operator()
        self.operator = CreditShareClient(self.url, api_key=self.operator_api_key)
        federation.layout.publish_revocation_lists(self.operator_api_key)
        issued = self.operator.register_participant(bank_id, "bank", "Test Bank")
        self.bank_id = bank_id
        self.bank_api_key: str = issued["api_key"]
        self.bank_identity = federation.layout.identity(bank_id, "bank")
        self.bank = CreditShareClient(
            self.url,
            api_key=self.bank_api_key,
            private_key=bank_key,
            identity=self.bank_identity,
            alert_key=AlertPrivateKey.generate(),
        )
        self.bank.register_paillier_key()
        self.bank.upload_credentials()
        self._enterprises: dict[str, tuple[CreditShareClient, SigningKey, str]] = {}
        #: API keys of other participants a test registered (participant id → key).
        self.api_keys: dict[str, str] = {}

    def participant(self, participant_id: str, role: str, name: str) -> tuple[str, Identity]:
        """Register a bank or bureau whose key is certified by every chain CA, with its
        credentials uploaded: its API key and signing identity."""
        issued = self.operator.register_participant(participant_id, role, name)
        identity = self.layout.identity(participant_id, role)
        with CreditShareClient(self.url, api_key=issued["api_key"], identity=identity) as c:
            c.upload_credentials()
        self.api_keys[participant_id] = str(issued["api_key"])
        return str(issued["api_key"]), identity

    def signed(self, body: dict[str, Any]) -> dict[str, Any]:
        """A POST /v1/queries body signed by this trust's bank."""
        return signed_query_body(self.bank_identity, body)

    def enterprise(self, uscc: str) -> tuple[CreditShareClient, SigningKey]:
        if uscc not in self._enterprises:
            identity = self.layout.identity(f"ent-{uscc.lower()}", "enterprise", uscc)
            signing = identity.signing_key
            issued = self.operator.register_participant(
                f"ent-{uscc.lower()}",
                "enterprise",
                f"Enterprise {uscc}",
                uscc=uscc,
                signing_key=signing.verify_key,
            )
            client = CreditShareClient(self.url, api_key=issued["api_key"], identity=identity)
            client.upload_credentials()
            self._enterprises[uscc] = (client, signing, issued["api_key"])
        client, signing, _ = self._enterprises[uscc]
        return client, signing

    def enterprise_api_key(self, uscc: str) -> str:
        self.enterprise(uscc)
        return self._enterprises[uscc][2]

    def consent(
        self,
        uscc: str,
        *,
        purpose: Purpose = Purpose.PRE_LOAN_REVIEW,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        max_uses: int | None = None,
        chains: tuple[Chain, ...] = tuple(Chain),
        indicators: tuple[str, ...] = ("*",),
        grantee: str | None = None,
    ) -> str:
        client, signing = self.enterprise(uscc)
        now = datetime.now(UTC)
        grant = ConsentGrant.create(
            uscc,
            grantee or self.bank_id,
            purpose,
            valid_from or now - timedelta(minutes=1),
            valid_until or now + timedelta(days=1),
            chains=chains,
            indicators=indicators,
            max_uses=max_uses,
        )
        consent_id: str = client.grant_consent(grant.sign(signing))["consent_id"]
        return consent_id

    def close(self) -> None:
        for client, _, _ in self._enterprises.values():
            client.close()
        self.bank.close()
        self.operator.close()


@pytest.fixture(scope="session")
def trust(federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(federation, bank_key, "test-bank")
    yield state
    state.close()


@pytest.fixture
def small_trust(small_federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(small_federation, bank_key, "small-bank")
    yield state
    state.close()


@pytest.fixture
def small_federation(tmp_path: Path, data_dir: Path) -> Iterator[Federation]:
    """One chain, three nodes, a short deadline: for tests that break nodes."""
    layout = FederationLayout.write(
        tmp_path,
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        # Short enough that a frozen node costs a test seconds, long enough that a live
        # node on a machine with both cores busy never misses it.
        node_deadline_seconds=5.0,
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture
def monitored(tmp_path: Path, data_dir: Path) -> Iterator[Federation]:
    """One chain, three nodes; cycles run only when a test asks; webhooks retry fast."""
    layout = FederationLayout.write(
        tmp_path / "federation",
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=5.0,
        coordinator_overrides={
            "monitoring_interval_seconds": 0,
            "webhook_initial_backoff_seconds": 0.2,
            "webhook_max_backoff_seconds": 1.0,
            "webhook_allowed_networks": ["127.0.0.0/8"],  # the test's receiver
        },
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture
def mtrust(monitored: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(monitored, bank_key, "watching-bank")
    yield state
    state.close()


ServeApp = Callable[[FastAPI], AbstractContextManager[str]]


@pytest.fixture
def serve_app() -> ServeApp:
    return serve_in_thread


@contextmanager
def synthetic_federation(
    root: Path, enterprises: int, departments: tuple[str, ...]
) -> Iterator[Federation]:
    """A fresh one-chain federation of ``enterprises`` synthetic rows for a training module
    (its own data: a job's curve and metrics depend on the rows)."""
    generate(enterprises, 3, root / "data")
    layout = FederationLayout.write(
        root / "fed", root / "data", chains=[Chain.YRD], departments=departments
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@contextmanager
def training_parties(
    federation: Federation, bank_key: PrivateKey, bank: str
) -> Iterator[tuple[Trust, CreditShareClient]]:
    """The trust set-up and a registered bureau (``bureau-1``) with a fresh job key."""
    trust = Trust(federation, bank_key, bank)
    issued = trust.operator.register_participant("bureau-1", "bureau", "Credit Bureau One")
    trust.api_keys["bureau-1"] = issued["api_key"]
    bureau = CreditShareClient(
        trust.url,
        api_key=issued["api_key"],
        private_key=PrivateKey.generate(),
        identity=federation.layout.identity("bureau-1", "bureau"),
    )
    try:
        # Every test may be the first to run (-k, reordering): the credential is on file.
        bureau.upload_credentials()
        yield trust, bureau
    finally:
        bureau.close()
        trust.close()


def bureau_labels(federation: Federation) -> dict[str, int]:
    """The bureau's default labels by USCC, as the demo data wrote them."""
    with (federation.layout.data_dir / "bureau" / "labels.csv").open() as handle:
        return {r["uscc"]: int(r["default"]) for r in csv.DictReader(handle)}
