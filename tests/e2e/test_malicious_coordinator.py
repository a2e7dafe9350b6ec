"""A compromised coordinator against real data nodes: it can delay or refuse, nothing more.

The attacker here is the coordinator itself: its real services (ledger, signing key,
mutual-TLS channels to the nodes, database) built from its real settings and driven by
attack code in-process, next to the honest coordinator process of the same federation.
It records whatever it likes in the ledger (the log key is its own), so receipts prove
nothing about honesty; each node has to find the lie from signatures it checks itself
against the chain CA. Every attack below must be refused by every node, with a clear
gRPC status and a row in that node's own refusal log. A control request built by the
same code without the lie is answered by every node, so the harness itself can succeed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from creditshare._canonical import parse_time
from creditshare.client import CreditShareClient, Identity, sign_job, sign_query
from creditshare.consent import ConsentGrant, Purpose, SignedConsent
from creditshare.coordinator._services import Services, build_services
from creditshare.crypto import PrivateKey, PublicKey, SigningKey
from creditshare.demo import Federation, FederationLayout
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.federated import (
    BureauRun,
    PsiParty,
    PsiTranscript,
    TrainingConfig,
    bureau_request,
    hash_to_u,
)
from creditshare.identity import Chain
from creditshare.ledger import QueryRecord, parse_record
from creditshare.node import refusal_log_entries
from creditshare.pki import init_ca, issue_revocation_list, parse_credential, revoke
from creditshare.proto import node_pb2, settings_to_pb, training_pb2
from creditshare.signed import (
    SignedPsiTranscript,
    SignedQuery,
    SignedTrainingJob,
    psi_transcript_document,
    training_document,
)

from .._pki import make_credential
from .._psi_pages import node_points
from .conftest import E2E_DEPARTMENTS, Trust

USCC = "91310115MA3BJ1XGXC"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Federation]:
    layout = FederationLayout.write(
        tmp_path_factory.mktemp("malicious"),
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=1.0,
        # Revocations a node missed are handed again soon (the default is every minute).
        coordinator_overrides={"revocation_relay_interval_seconds": 0.5},
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="module")
def trust(federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(federation, bank_key, "honest-bank")
    yield state
    state.close()


@pytest.fixture(scope="module")
def attacker(federation: Federation, trust: Trust) -> Iterator[Attacker]:
    services = build_services(federation.layout.coordinator_settings())
    loop = asyncio.new_event_loop()
    loop.run_until_complete(services.broker.start())
    yield Attacker(services, loop, federation.layout, trust)
    loop.run_until_complete(services.broker.close())
    loop.close()


class Attacker:
    """The compromised coordinator: records what it likes and relays it to the nodes."""

    def __init__(
        self,
        services: Services,
        loop: asyncio.AbstractEventLoop,
        layout: FederationLayout,
        trust: Trust,
    ) -> None:
        self.services, self.loop, self.layout, self.trust = services, loop, layout, trust
        self.nodes = [n.node_id for n in layout.nodes]

    def credentials(self, **parts: Any) -> node_pb2.Credentials:
        store = self.services.credentials
        fields: dict[str, Any] = {
            "requester": list(store.of(self.trust.bank_id)),
            "enterprise": list(store.of(f"ent-{USCC.lower()}")),
            "revocation_lists": list(store.lists()),
        }
        return node_pb2.Credentials(**(fields | parts))

    def honest_record(self, consent_id: str, **signed: Any) -> QueryRecord:
        """What the honest coordinator records for a fresh query the bank signed."""
        body: dict[str, Any] = {
            "uscc": USCC,
            "model_id": DEFAULT_MODEL_ID,
            "purpose": Purpose.PRE_LOAN_REVIEW.value,
            "consent_id": consent_id,
            "key_fingerprint": self.trust.bank.private_key.public_key.fingerprint(),
        } | signed
        body |= sign_query(self.trust.bank_identity, body)
        request = SignedQuery.from_json(
            {
                "document": {
                    "v": 1,
                    "type": "query",
                    "query_id": body["query_id"],
                    "requester": self.trust.bank_id,
                    "uscc": USCC,
                    "purpose": body["purpose"],
                    "consent_id": consent_id,
                    "chains": [],
                    "model_id": DEFAULT_MODEL_ID,
                    "key_fingerprint": body["key_fingerprint"],
                    "time": body["requested_at"],
                },
                "signature": body["signature"],
            }
        )
        consent = self.consent(consent_id)
        return QueryRecord(
            kind="query",
            query_id=body["query_id"],
            time=datetime.now(UTC),
            uscc=USCC,
            requester=self.trust.bank_id,
            requester_role="bank",
            purpose=body["purpose"],
            consent_id=consent_id,
            model_id=DEFAULT_MODEL_ID,
            key_fingerprint=body["key_fingerprint"],
            chains=(Chain.YRD.value,),
            indicators=consent.grant.indicators,
            request=request.to_json(),
            consent=consent.to_json(),
        )

    def consent(self, consent_id: str) -> SignedConsent:
        client, _ = self.trust.enterprise(USCC)
        row = client.consent(consent_id)
        return SignedConsent.from_json({"document": row["document"], "signature": row["signature"]})

    def send(
        self,
        record: QueryRecord,
        key: PublicKey | None = None,
        credentials: node_pb2.Credentials | None = None,
    ) -> dict[str, tuple[str, str]]:
        """Record ``record`` and relay it to every node; node → (status, reason) or "answered"."""
        services = self.services
        receipt = services.ledger.append(record.to_bytes(), record.uscc)
        model = services.registry.model(DEFAULT_MODEL_ID)
        result = self.loop.run_until_complete(
            services.broker.query(
                record.query_id,
                record.uscc,
                model,
                key or self.trust.bank.private_key.public_key,
                [Chain.YRD],
                receipt,
                record.covers_indicator,
                credentials or self.credentials(),
            )
        )
        out = {a.node.id: ("answered", "") for a in result.answers}
        out |= {f.node.id: (f.kind, f.reason) for f in result.failures}
        return out

    def refusals(self, request_id: str) -> dict[str, list[str]]:
        """Each node's own refusal log rows for ``request_id``."""
        return {
            node.node_id: [
                row.reason
                for row in refusal_log_entries(self.layout.node_settings(node))
                if row.request_id == request_id
            ]
            for node in self.layout.nodes
        }


def _assert_refused_everywhere(
    attacker: Attacker, record: QueryRecord, outcome: dict[str, tuple[str, str]], says: str
) -> None:
    assert set(outcome) == set(attacker.nodes)
    for node, (status, reason) in outcome.items():
        assert status == "permission_denied", (node, status, reason)
        assert says in reason, (node, reason)
    logged = attacker.refusals(record.query_id)
    for node, reasons in logged.items():
        assert any(says in r for r in reasons), (node, reasons)


@pytest.fixture(scope="module")
def consent_id(trust: Trust) -> str:
    return trust.consent(USCC)


def test_the_same_harness_without_a_lie_is_answered_by_every_node(
    attacker: Attacker, consent_id: str
) -> None:
    outcome = attacker.send(attacker.honest_record(consent_id))
    assert outcome == {node: ("answered", "") for node in attacker.nodes}


def test_the_banks_key_replaced_in_the_record(attacker: Attacker, consent_id: str) -> None:
    mine = PrivateKey.generate().public_key
    record = dataclasses.replace(
        attacker.honest_record(consent_id), key_fingerprint=mine.fingerprint()
    )
    outcome = attacker.send(record, key=mine)
    _assert_refused_everywhere(attacker, record, outcome, "public key")


def test_the_banks_key_replaced_in_the_signed_request_too(
    attacker: Attacker, consent_id: str
) -> None:
    mine = PrivateKey.generate().public_key
    honest = attacker.honest_record(consent_id)
    assert honest.request is not None
    request = {
        "document": honest.request["document"] | {"key_fingerprint": mine.fingerprint()},
        "signature": honest.request["signature"],
    }
    record = dataclasses.replace(honest, key_fingerprint=mine.fingerprint(), request=request)
    outcome = attacker.send(record, key=mine)
    _assert_refused_everywhere(attacker, record, outcome, "not signed by")


def test_a_forged_consent(attacker: Attacker, consent_id: str) -> None:
    honest = attacker.honest_record(consent_id)
    forged = attacker.consent(consent_id).grant.sign(SigningKey.generate())
    record = dataclasses.replace(honest, consent=forged.to_json())
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "certified key")


def test_a_consent_forged_with_a_credential_from_another_ca(
    attacker: Attacker, consent_id: str, tmp_path: Path
) -> None:
    init_ca(Chain.YRD.value, tmp_path / "rogue-ca")
    key, credential = make_credential(
        tmp_path / "rogue-ca", tmp_path, f"ent-{USCC.lower()}", "enterprise", USCC
    )
    forged = attacker.consent(consent_id).grant.sign(key)
    record = dataclasses.replace(attacker.honest_record(consent_id), consent=forged.to_json())
    outcome = attacker.send(record, credentials=attacker.credentials(enterprise=[credential]))
    _assert_refused_everywhere(attacker, record, outcome, "trusted CA")


def test_an_altered_consent(attacker: Attacker, consent_id: str) -> None:
    honest = attacker.honest_record(consent_id)
    assert honest.consent is not None
    widened = honest.consent["document"] | {"max_uses": None, "purpose": "model_training"}
    record = dataclasses.replace(
        honest, consent={"document": widened, "signature": honest.consent["signature"]}
    )
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "not the one the request names")


def _grant(trust: Trust, **changes: Any) -> str:
    """A consent the enterprise really signed (through the honest coordinator)."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "valid_from": now - timedelta(minutes=1),
        "valid_until": now + timedelta(days=1),
        "grantee": trust.bank_id,
    } | changes
    client, signing = trust.enterprise(USCC)
    grant = ConsentGrant.create(
        USCC,
        fields["grantee"],
        Purpose.PRE_LOAN_REVIEW,
        fields["valid_from"],
        fields["valid_until"],
    )
    return str(client.grant_consent(grant.sign(signing))["consent_id"])


def test_an_expired_consent(attacker: Attacker, trust: Trust) -> None:
    now = datetime.now(UTC)
    expired = _grant(trust, valid_from=now - timedelta(days=2), valid_until=now - timedelta(days=1))
    record = attacker.honest_record(expired)
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "expired")


def test_a_consent_naming_another_bank(attacker: Attacker, trust: Trust) -> None:
    trust.operator.register_participant("other-bank", "bank", "Other Bank")
    theirs = _grant(trust, grantee="other-bank")
    record = attacker.honest_record(theirs)
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "another participant")


def test_a_revoked_consent(attacker: Attacker, trust: Trust) -> None:
    withdrawn = _grant(trust)
    client, signing = trust.enterprise(USCC)
    revoked = client.revoke_consent(withdrawn, signing)
    assert {n["node"] for n in revoked["nodes"] if n["holds_revocation"]} == set(attacker.nodes)
    record = attacker.honest_record(withdrawn)
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "revoked")
    # The department's operator sees the attempt with the node's own command.
    node = attacker.layout.nodes[0]
    listed = subprocess.run(
        [sys.executable, "-m", "creditshare", "node", "refusals", "--config", str(node.config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert record.query_id in listed and "revoked" in listed


def test_a_revocation_a_node_missed_reaches_it_later(
    attacker: Attacker, federation: Federation, trust: Trust
) -> None:
    """A node that was down when the enterprise revoked still gets the signed revocation
    (the coordinator keeps handing it over), so it too refuses the consent later, whoever
    relays a query under it."""
    withdrawn = _grant(trust)
    client, signing = trust.enterprise(USCC)
    federation.pause_node("yrd-tax")
    try:
        revoked = client.revoke_consent(withdrawn, signing)
    finally:
        federation.resume_node("yrd-tax")
    held = {n["node"]: n["holds_revocation"] for n in revoked["nodes"]}
    assert held == {"yrd-tax": False, "yrd-market": True, "yrd-court": True}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        nodes = client.consent(withdrawn)["nodes"]
        if all(n["holds_revocation"] for n in nodes):
            break
        time.sleep(0.2)
    assert all(n["holds_revocation"] for n in client.consent(withdrawn)["nodes"])
    record = attacker.honest_record(withdrawn)
    outcome = attacker.send(record)
    _assert_refused_everywhere(attacker, record, outcome, "revoked")


def test_a_replayed_request(attacker: Attacker, consent_id: str) -> None:
    record = attacker.honest_record(consent_id)
    assert set(attacker.send(record).values()) == {("answered", "")}
    outcome = attacker.send(record)  # the same signed request, recorded again
    _assert_refused_everywhere(attacker, record, outcome, "already")


def test_a_request_from_a_revoked_credential(
    attacker: Attacker, federation: Federation, trust: Trust, bank_key: PrivateKey
) -> None:
    """The CA revokes a bank's credential; once a node holds that list, no relay can make
    it forget: a coordinator that keeps sending the older list is refused all the same."""
    layout = federation.layout
    issued = trust.operator.register_participant("revoked-bank", "bank", "Revoked Bank")
    identity = layout.identity("revoked-bank", "bank")
    bank = CreditShareClient(
        layout.coordinator_url, api_key=issued["api_key"], private_key=bank_key, identity=identity
    )
    bank.upload_credentials()
    old_lists = list(attacker.services.credentials.lists())
    ca_dir = layout.work_dir / "pki" / Chain.YRD.value / "ca"
    for data in identity.credentials:
        revoke(ca_dir, serial=parse_credential(data).serial)
    crl = layout.work_dir / "revoked-bank.crl"
    issue_revocation_list(ca_dir, crl, valid_hours=24)
    trust.operator.upload_revocation_list(crl.read_bytes())
    granted = _grant(trust, grantee="revoked-bank")
    bank.close()
    # The bank's signed request, relayed first with the new list (an honest relay would),
    # then with the list from before the revocation (the attacker's rollback).
    body = {
        "uscc": USCC,
        "model_id": DEFAULT_MODEL_ID,
        "purpose": "pre_loan_review",
        "consent_id": granted,
        "key_fingerprint": bank_key.public_key.fingerprint(),
    }
    body |= sign_query(identity, body)
    record = dataclasses.replace(
        attacker.honest_record(granted),
        query_id=body["query_id"],
        requester="revoked-bank",
        request=_signed_request(body, "revoked-bank"),
    )
    first = attacker.send(
        record,
        credentials=attacker.credentials(
            requester=[bytes(c) for c in identity.credentials],
            revocation_lists=[crl.read_bytes()],
        ),
    )
    _assert_refused_everywhere(attacker, record, first, "revoked")
    body2 = {k: body[k] for k in ("uscc", "model_id", "purpose", "consent_id", "key_fingerprint")}
    body2 |= sign_query(identity, body2)
    record2 = dataclasses.replace(
        record, query_id=body2["query_id"], request=_signed_request(body2, "revoked-bank")
    )
    second = attacker.send(
        record2,
        credentials=attacker.credentials(
            requester=[bytes(c) for c in identity.credentials], revocation_lists=old_lists
        ),
    )
    _assert_refused_everywhere(attacker, record2, second, "revoked")


def _signed_request(body: dict[str, Any], requester: str) -> dict[str, Any]:
    return {
        "document": {
            "v": 1,
            "type": "query",
            "query_id": body["query_id"],
            "requester": requester,
            "uscc": body["uscc"],
            "purpose": body["purpose"],
            "consent_id": body["consent_id"],
            "chains": sorted(body.get("chains") or []),
            "model_id": body["model_id"],
            "key_fingerprint": body["key_fingerprint"],
            "time": body["requested_at"],
        },
        "signature": body["signature"],
    }


@dataclasses.dataclass(frozen=True)
class _BureauJob:
    """A job a real bureau signed (through the SDK) for ``config``."""

    bureau: str
    key: PrivateKey
    config: TrainingConfig
    body: dict[str, Any]
    identity: Identity

    def psi_signature(self, node: str, domain: bytes, points: list[bytes]) -> bytes:
        """The bureau's signature over a PSI run that sent ``node`` exactly ``points``."""
        transcript = PsiTranscript()
        transcript.add(points)
        document = psi_transcript_document(
            job_id=self.job_id,
            requester=self.bureau,
            node=node,
            domain=domain,
            points=transcript.count,
            transcript_sha256=transcript.digest(),
        )
        return SignedPsiTranscript.sign(document, self.identity.signing_key).signature

    @property
    def job_id(self) -> str:
        return str(self.body["job_id"])

    def signed(self) -> SignedTrainingJob:
        """The signed document exactly as the honest coordinator rebuilds it from the body."""
        document = training_document(
            job_id=self.job_id,
            requester=self.bureau,
            key_fingerprint=str(self.body["key_fingerprint"]),
            nodes=list(self.body["nodes"]),
            config_sha256=str(self.body["config_sha256"]),
            time=parse_time(self.body["requested_at"], "requested_at"),
        )
        return SignedTrainingJob.from_json(
            {"document": document, "signature": self.body["signature"]}
        )

    def record(self, key_fingerprint: str) -> QueryRecord:
        """The ledger record of the job, naming ``key_fingerprint`` as the key to use."""
        return QueryRecord(
            kind="training",
            query_id=self.job_id,
            time=datetime.now(UTC),
            uscc="",
            requester=self.bureau,
            requester_role="bureau",
            purpose=Purpose.MODEL_TRAINING.value,
            consent_id="",
            model_id=f"model-{self.job_id[:8]}",
            key_fingerprint=key_fingerprint,
            chains=(Chain.YRD.value,),
            indicators=(),
            request=self.signed().to_json(),
        )


def _bureau_job(
    attacker: Attacker, trust: Trust, bureau: str, config: TrainingConfig
) -> _BureauJob:
    """A bureau registered with the federation (its credential uploaded) and the body of
    a training job it signed for every node with ``config``."""
    layout = attacker.layout
    issued = trust.operator.register_participant(bureau, "bureau", bureau.title())
    identity = layout.identity(bureau, "bureau")
    bureau_key = PrivateKey.generate()
    with CreditShareClient(
        layout.coordinator_url,
        api_key=issued["api_key"],
        private_key=bureau_key,
        identity=identity,
    ) as client:
        client.upload_credentials()
        body: dict[str, Any] = {
            "key_fingerprint": bureau_key.public_key.fingerprint(),
            "nodes": list(attacker.nodes),
            "config": config.to_document(),
        }
        body |= sign_job(identity, body)
    return _BureauJob(bureau, bureau_key, config, body, identity)


def test_a_training_job_under_a_key_the_bureau_did_not_sign(
    attacker: Attacker, trust: Trust
) -> None:
    job = _bureau_job(attacker, trust, "bureau-x", TrainingConfig())
    mine = PrivateKey.generate().public_key
    job_id = job.job_id
    record = job.record(mine.fingerprint())
    services = attacker.services
    receipt = services.ledger.append(record.to_bytes(), "training:bureau-x")
    credentials = node_pb2.Credentials(
        requester=list(services.credentials.of("bureau-x")),
        revocation_lists=list(services.credentials.lists()),
    )

    async def psi(node: str) -> str:
        stub = services.broker.training[node]

        async def call(proof: node_pb2.QueryReceipt, seconds: float) -> Any:
            return await stub.PsiAnswer(
                training_pb2.PsiAnswerRequest(
                    job_id=job_id,
                    domain=b"stolen",
                    blinded=[b"\x02" + b"\x11" * 32],
                    public_key=node_pb2.PaillierPublicKey(n=mine.to_bytes()),
                    receipt=proof,
                    credentials=credentials,
                ),
                timeout=seconds,
            )

        try:
            await services.broker.call_with_receipt(node, receipt, call, 30.0)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name.lower()}: {exc.details()}"
        return "answered"

    outcomes = {node: attacker.loop.run_until_complete(psi(node)) for node in attacker.nodes}
    for node, outcome in outcomes.items():
        assert outcome.startswith("permission_denied") and "public key" in outcome, (
            node,
            outcome,
        )
    for node, reasons in attacker.refusals(job_id).items():
        assert any("public key" in r for r in reasons), (node, reasons)


def test_a_training_setting_altered_on_the_way_is_refused_and_nothing_is_trained(
    attacker: Attacker, trust: Trust
) -> None:
    """The bureau signed its settings (by their hash); the coordinator records the job
    honestly, runs PSI, then opens each node with one setting changed (unclipped
    features: the stored shard's preprocessing would differ from the published config).
    Every node refuses and logs it, and holds no job to train; the same OpenJob with the
    signed settings is accepted (the harness works)."""
    job = _bureau_job(attacker, trust, "bureau-s", TrainingConfig(feature_clip=3.0))
    services = attacker.services
    record = job.record(job.key.public_key.fingerprint())
    receipt = services.ledger.append(record.to_bytes(), "training:bureau-s")
    credentials = node_pb2.Credentials(
        requester=list(services.credentials.of("bureau-s")),
        revocation_lists=list(services.credentials.lists()),
    )
    public_key = node_pb2.PaillierPublicKey(n=job.key.public_key.to_bytes())
    altered = job.config.replace(feature_clip=0.0)

    async def relay(node: str, method: str, request: Any) -> Any:
        stub = services.broker.training[node]

        async def call(proof: node_pb2.QueryReceipt, seconds: float) -> Any:
            request.receipt.CopyFrom(proof)
            return await getattr(stub, method)(request, timeout=seconds)

        return await services.broker.call_with_receipt(node, receipt, call, 60.0)

    async def attack(node: str) -> tuple[str, str, str]:
        party = PsiParty(b"altered-settings")
        stub = services.broker.training[node]
        blinded = list(bureau_request(party, [USCC]).blinded)
        await relay(
            node,
            "PsiAnswer",
            training_pb2.PsiAnswerRequest(
                job_id=job.job_id,
                domain=b"altered-settings",
                blinded=blinded,
                public_key=public_key,
                credentials=credentials,
                transcript_signature=job.psi_signature(node, b"altered-settings", blinded),
            ),
        )
        opening = training_pb2.OpenJobRequest(
            job_id=job.job_id,
            public_key=public_key,
            points=(await node_points(stub, job.job_id))[:8],
            settings=settings_to_pb(altered),
            credentials=credentials,
        )
        try:
            await relay(node, "OpenJob", opening)
        except grpc.aio.AioRpcError as exc:
            refused = f"{exc.code().name.lower()}: {exc.details()}"
        else:
            refused = "opened"
        stub = services.broker.training[node]
        try:
            await stub.Forward(training_pb2.ForwardRequest(job_id=job.job_id, rows=[0]))
        except grpc.aio.AioRpcError as exc:
            trained = exc.code().name.lower()
        else:
            trained = "a job to train"
        # Control: the settings the bureau signed open the job on the same receipt.
        opening.settings.CopyFrom(settings_to_pb(job.config))
        opened = await relay(node, "OpenJob", opening)
        await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job.job_id))
        return refused, trained, f"{opened.rows} rows"

    outcomes = {node: attacker.loop.run_until_complete(attack(node)) for node in attacker.nodes}
    for node, (refused, trained, control) in outcomes.items():
        assert refused.startswith("permission_denied"), (node, refused)
        assert "training settings" in refused, (node, refused)
        assert trained == "not_found", (node, trained)
        assert control == "8 rows", (node, control)
    for node, reasons in attacker.refusals(job.job_id).items():
        assert any("training settings" in r for r in reasons), (node, reasons)


def test_a_chunk_the_relay_slips_into_a_psi_run_gets_it_no_points(
    attacker: Attacker, trust: Trust
) -> None:
    """The coordinator relays a real bureau's PSI run (one chunk, signed) but turns it
    into two: the bureau's chunk, then one of ``H(x)`` for ids it guesses, closed with
    the bureau's signature. Every node answers up to the last chunk, then refuses it
    (the signature is over a transcript without the guessed points), drops the run and
    pages out none of its points; the bureau's run as signed is answered and paged on
    the same receipt (the harness works)."""
    job = _bureau_job(attacker, trust, "bureau-p", TrainingConfig())
    services = attacker.services
    record = job.record(job.key.public_key.fingerprint())
    receipt = services.ledger.append(record.to_bytes(), "training:bureau-p")
    credentials = node_pb2.Credentials(
        requester=list(services.credentials.of("bureau-p")),
        revocation_lists=list(services.credentials.lists()),
    )
    public_key = node_pb2.PaillierPublicKey(n=job.key.public_key.to_bytes())
    domain = b"slipped-in"
    (honest,) = BureauRun(domain, [USCC, "91000000000000000X"]).chunks()
    guessed = [hash_to_u(f"9131011{k:011d}", domain) for k in range(20)]

    async def first(node: str, more: bool) -> Any:
        stub = services.broker.training[node]

        async def call(proof: node_pb2.QueryReceipt, seconds: float) -> Any:
            request = training_pb2.PsiAnswerRequest(
                job_id=job.job_id,
                domain=domain,
                blinded=honest.blinded,
                public_key=public_key,
                credentials=credentials,
                receipt=proof,
                more=more,
            )
            if not more:
                request.transcript_signature = job.psi_signature(node, domain, honest.blinded)
            return await stub.PsiAnswer(request, timeout=seconds)

        return await services.broker.call_with_receipt(node, receipt, call, 60.0)

    async def attack(node: str) -> tuple[str, str, int]:
        stub = services.broker.training[node]
        await first(node, more=True)
        try:
            await stub.PsiAnswer(
                training_pb2.PsiAnswerRequest(
                    job_id=job.job_id,
                    domain=domain,
                    blinded=guessed,
                    offset=len(honest.blinded),
                    more=False,
                    transcript_signature=job.psi_signature(node, domain, honest.blinded),
                )
            )
        except grpc.aio.AioRpcError as exc:
            refused = f"{exc.code().name.lower()}: {exc.details()}"
        else:
            refused = "answered"
        try:
            await stub.PsiPoints(training_pb2.PsiPointsRequest(job_id=job.job_id, limit=100))
        except grpc.aio.AioRpcError as exc:
            paged = f"{exc.code().name.lower()}: {exc.details()}"
        else:
            paged = "the node's points"
        # Control: the run exactly as the bureau signed it.
        await first(node, more=False)
        return refused, paged, len(await node_points(stub, job.job_id))

    outcomes = {node: attacker.loop.run_until_complete(attack(node)) for node in attacker.nodes}
    for node, (refused, paged, control) in outcomes.items():
        assert refused.startswith("permission_denied"), (node, refused)
        assert "not signed by 'bureau-p'" in refused, (node, refused)
        assert paged.startswith("invalid_argument: no PSI run"), (node, paged)
        assert control > 0, (node, control)
    for node, reasons in attacker.refusals(job.job_id).items():
        assert any("PSI transcript" in r for r in reasons), (node, reasons)


def test_the_ledger_records_the_signed_request_and_consent(
    trust: Trust, attacker: Attacker, consent_id: str
) -> None:
    """What the honest coordinator records is what nodes check: the bank's own signature
    over its request, and the consent exactly as the enterprise signed it."""
    profile = trust.bank.query(USCC, consent_id, chains=["yrd"])
    leaf = attacker.services.ledger.receipt(int(profile.raw["ledger_index"]))
    record = parse_record(leaf.data)
    assert record.request is not None and record.consent is not None
    request = SignedQuery.from_json(record.request)
    request.verify(trust.bank_identity.signing_key.verify_key)
    consent = SignedConsent.from_json(record.consent)
    consent.verify(trust.enterprise(USCC)[1].verify_key)
    assert consent.grant.consent_id == consent_id == request.document["consent_id"]


def test_a_consent_used_beyond_its_limit_is_reported_by_ledger_verify(
    attacker: Attacker, federation: Federation, trust: Trust
) -> None:
    """Use counting is availability, so it stays at the coordinator: a compromised one can
    spend a consent more often than it allows. Each use is a ledger entry, though, and
    ``creditshare ledger verify`` names the consent and the entries beyond its limit."""
    once = trust.consent(USCC, max_uses=1)
    first, second = attacker.honest_record(once), attacker.honest_record(once)
    assert set(attacker.send(first).values()) == {("answered", "")}
    assert set(attacker.send(second).values()) == {("answered", "")}
    config = federation.layout.coordinator_config
    assert config is not None
    done = subprocess.run(
        [sys.executable, "-m", "creditshare", "ledger", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"consent {once}: used 2 times, its limit is 1" in done.stderr
