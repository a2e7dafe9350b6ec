"""Participants' lifecycle against running coordinators: disabling revokes, signing keys
rotate, participants are re-enabled, and the chain never loses its last operator; and
concurrent duplicates are 409s, never 500s (SQLite and PostgreSQL, two replicas)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from creditshare.client import CreditShareClient
from creditshare.consent import MAX_USES, ConsentGrant, Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import bootstrap_operator, init_log_key
from creditshare.crypto import SigningKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError

from .._authority import authority
from .._pki import make_credential
from .conftest import ServeApp, Trust

USCC = "91100000100003962T"
OTHER_USCC = "91110000600037341L"


def _status(call: Callable[[], object]) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        call()
    return caught.value


def _grant(uscc: str, grantee: str, **changes: Any) -> ConsentGrant:
    now = datetime.now(UTC)
    return ConsentGrant.create(
        uscc,
        grantee,
        Purpose.PRE_LOAN_REVIEW,
        now - timedelta(minutes=1),
        now + timedelta(days=1),
        **changes,
    )


def _at_once(calls: list[Callable[[], httpx.Response]]) -> list[int]:
    """Run the calls in threads released together; their status codes, in order."""
    barrier = threading.Barrier(len(calls))
    statuses: list[int] = [0] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        statuses[i] = calls[i]().status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request never finished"
    return statuses


# --- a dedicated chain: two replicas on one database, no nodes needed ---------------------


@dataclass
class Chain:
    urls: list[str]  # two replicas
    database_url: str
    operator_key: str

    def post(self, replica: int, path: str, api_key: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(
            self.urls[replica] + path,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
            **kwargs,
        )

    def count(self, sql: str) -> int:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()


@pytest.fixture
def chain(tmp_path: Path, database_url: str, serve_app: ServeApp) -> Iterator[Chain]:
    key_file = tmp_path / "log-key.pem"
    init_log_key(key_file)
    settings = CoordinatorSettings(
        log_signing_key_file=key_file,
        database_url=database_url,
        allow_insecure=True,
        rate_limit_store="database",
    )
    operator_key = bootstrap_operator(settings, "op-1", "First operator").api_key
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_app(create_app(settings))) for _ in range(2)]
        yield Chain(urls, database_url, operator_key)


def _operators_able_to_act(chain: Chain) -> int:
    return chain.count(
        "SELECT count(DISTINCT p.id) FROM participant p JOIN api_credential c "
        "ON c.participant_id = p.id WHERE p.role = 'operator' AND NOT p.disabled "
        "AND c.revoked_at IS NULL"
    )


def test_the_last_operator_survives_concurrent_disabling(chain: Chain) -> None:
    second = chain.post(0, "/v1/participants", chain.operator_key, json=_operator("op-2"))
    assert second.status_code == 201
    keys = {"op-1": chain.operator_key, "op-2": second.json()["api_key"]}
    for _ in range(4):
        # Each operator disables the other, on different replicas, at the same moment.
        statuses = _at_once(
            [
                lambda: chain.post(0, "/v1/participants/op-2/disable", keys["op-1"]),
                lambda: chain.post(1, "/v1/participants/op-1/disable", keys["op-2"]),
            ]
        )
        assert statuses.count(200) == 1, statuses
        # The loser is refused (409), or finds its own key already disabled (401).
        assert set(statuses) - {200} <= {409, 401}, statuses
        assert _operators_able_to_act(chain) == 1
        winner, loser = ("op-1", "op-2") if statuses[0] == 200 else ("op-2", "op-1")
        # The survivor cannot disable itself either, and can bring the other one back.
        itself = chain.post(0, f"/v1/participants/{winner}/disable", keys[winner])
        assert itself.status_code == 409 and "no enabled operator" in itself.json()["detail"]
        back = chain.post(1, f"/v1/participants/{loser}/enable", keys[winner])
        assert back.status_code == 200 and back.json()["disabled"] is False
        assert _operators_able_to_act(chain) == 2


def test_the_last_operator_keeps_its_last_key(chain: Chain) -> None:
    key_id = chain.operator_key.split(".")[0].removeprefix("cs_")
    refused = chain.post(
        0, f"/v1/participants/op-1/credentials/{key_id}/revoke", chain.operator_key
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    # The key still works, and with a second key the first may go.
    issued = chain.post(1, "/v1/participants/op-1/credentials", chain.operator_key)
    assert issued.status_code == 201
    second = issued.json()["api_key"]
    # Both keys revoked at once on two replicas: exactly one revocation wins.
    second_id = second.split(".")[0].removeprefix("cs_")
    statuses = _at_once(
        [
            lambda: chain.post(0, f"/v1/participants/op-1/credentials/{key_id}/revoke", second),
            lambda: chain.post(
                1, f"/v1/participants/op-1/credentials/{second_id}/revoke", chain.operator_key
            ),
        ]
    )
    assert sorted(statuses) in ([204, 409], [204, 401]), statuses
    assert _operators_able_to_act(chain) == 1


def _operator(participant_id: str) -> dict[str, Any]:
    return {"id": participant_id, "role": "operator", "name": participant_id}


def test_concurrent_identical_registrations_are_409(chain: Chain) -> None:
    body = {"id": "bank-x", "role": "bank", "name": "Bank X"}
    statuses = _at_once(
        [
            partial(chain.post, i % 2, "/v1/participants", chain.operator_key, json=body)
            for i in range(8)
        ]
    )
    assert Counter(statuses) == {201: 1, 409: 7}, statuses
    # Two enterprises claiming one USCC under different ids: one wins, no 500.
    signing = SigningKey.generate().verify_key.to_text()
    statuses = _at_once(
        [
            partial(
                chain.post,
                i % 2,
                "/v1/participants",
                chain.operator_key,
                json={
                    "id": f"ent-{i}",
                    "role": "enterprise",
                    "name": "E",
                    "uscc": USCC,
                    "signing_key": signing,
                },
            )
            for i in range(6)
        ]
    )
    assert Counter(statuses) == {201: 1, 409: 5}, statuses
    # Every registered participant got exactly its first key, and nothing else was left.
    assert chain.count("SELECT count(*) FROM participant WHERE id LIKE 'ent-%'") == 1
    assert chain.count("SELECT count(*) FROM api_credential WHERE participant_id LIKE 'ent-%'") == 1
    # The coordinator still serves the next good request.
    ok = chain.post(1, "/v1/participants", chain.operator_key, json={**body, "id": "bank-y"})
    assert ok.status_code == 201


def test_concurrent_identical_grants_are_409_and_bad_use_limits_422(
    chain: Chain, tmp_path: Path
) -> None:
    # The enterprise's key, certified by a chain CA: a consent needs its credential on file.
    signing, credential = make_credential(authority().ca_dir, tmp_path, "ent-x", "enterprise", USCC)
    for participant in (
        {"id": "bank-x", "role": "bank", "name": "Bank X"},
        {
            "id": "ent-x",
            "role": "enterprise",
            "name": "E",
            "uscc": USCC,
            "signing_key": signing.verify_key.to_text(),
        },
    ):
        assert chain.post(0, "/v1/participants", chain.operator_key, json=participant).is_success
    bank_key = chain.post(0, "/v1/participants/bank-x/credentials", chain.operator_key).json()[
        "api_key"
    ]
    ent_key = chain.post(0, "/v1/participants/ent-x/credentials", chain.operator_key).json()[
        "api_key"
    ]
    uploaded = chain.post(
        0, "/v1/credentials", ent_key, json={"certificate": credential.decode("ascii")}
    )
    assert uploaded.status_code == 201, uploaded.text
    signed = _grant(USCC, "bank-x").sign(signing).to_json()
    statuses = _at_once(
        [partial(chain.post, i % 2, "/v1/consents", bank_key, json=signed) for i in range(8)]
    )
    assert Counter(statuses) == {201: 1, 409: 7}, statuses
    for max_uses in (MAX_USES + 1, 2**63, 10**30):
        document = _grant(USCC, "bank-x").to_document() | {"max_uses": max_uses}
        # Sent as an attacker would: the SDK itself refuses to build such a grant.
        body = {"document": document, "signature": signed["signature"]}
        refused = chain.post(1, "/v1/consents", bank_key, json=body)
        assert refused.status_code == 422 and "max_uses" in refused.json()["detail"]
    assert chain.count("SELECT count(*) FROM consent") == 1
    ok = chain.post(
        0, "/v1/consents", bank_key, json=_grant(USCC, "bank-x").sign(signing).to_json()
    )
    assert ok.status_code == 201


def test_cli_manages_participants(chain: Chain, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        base = [sys.executable, "-m", "creditshare", *args, "--coordinator", chain.urls[0]]
        return subprocess.run(base, capture_output=True, text=True, timeout=120)

    operator = ("--api-key", chain.operator_key)
    signing = SigningKey.generate()
    with CreditShareClient(chain.urls[1], api_key=chain.operator_key) as client:
        issued = client.register_participant(
            "ent-cli", "enterprise", "E", uscc=USCC, signing_key=signing.verify_key
        )
    enterprise = ("--api-key", issued["api_key"])
    done = cli("admin", "issue-key", *operator, "--id", "ent-cli")
    assert done.returncode == 0, done.stderr
    extra_key = done.stdout.strip().splitlines()[-1]
    assert extra_key.startswith("cs_")
    done = cli("admin", "revoke-key", *operator, "--id", "ent-cli", "--key-id", extra_key[3:19])
    assert done.returncode == 0, done.stderr
    new_key = tmp_path / "new-signing.key"
    done = cli(
        "enterprise", "rotate-key", *enterprise, "--id", "ent-cli", "--signing-key", str(new_key)
    )
    assert done.returncode == 0, done.stderr
    assert new_key.exists()
    done = cli("admin", "disable", *operator, "--id", "ent-cli")
    assert done.returncode == 0 and "disabled" in done.stdout, done.stderr
    done = cli("admin", "enable", *operator, "--id", "ent-cli")
    assert done.returncode == 0 and "enabled" in done.stdout, done.stderr
    done = cli("admin", "disable", *operator, "--id", "op-1")
    assert done.returncode != 0 and "409" in done.stderr + done.stdout


# --- on the running federation: what disabling and rotation do to consents --------------


def _uscc(federation: Federation, skip: int) -> str:
    """Enterprises no other test module on the shared federation uses (the last of BTH)."""
    rows = read_enterprises(federation.layout.data_dir)
    return [r["uscc"] for r in rows if r["record_chains"] == "bth"][-1 - skip]


def test_disabling_an_enterprise_revokes_its_consents_and_refuses_its_key(
    federation: Federation, trust: Trust
) -> None:
    uscc = _uscc(federation, 0)
    enterprise_id = f"ent-{uscc.lower()}"
    kept = trust.consent(uscc)
    other = trust.consent(uscc, purpose=Purpose.POST_LOAN_MONITORING)
    trust.bank.query(uscc, kept)
    _, signing = trust.enterprise(uscc)
    assert trust.operator.disable_participant(enterprise_id)["disabled"] is True
    for consent in (kept, other):
        assert trust.operator.consent(consent)["revoked"] is True
    refused = _status(lambda: trust.bank.query(uscc, kept))
    assert refused.status == 403 and "revoked" in refused.detail
    # Its signing key is no longer accepted: a fresh grant (submitted by the bank) is refused
    # and not stored.
    grant = _grant(uscc, trust.bank_id)
    refused = _status(lambda: trust.bank.grant_consent(grant.sign(signing)))
    assert refused.status == 403 and "disabled" in refused.detail
    assert _status(lambda: trust.operator.consent(grant.consent_id)).status == 404
    # Re-enabled: the key works again, the old consents stay revoked.
    assert trust.operator.enable_participant(enterprise_id)["disabled"] is False
    assert _status(lambda: trust.bank.query(uscc, kept)).status == 403
    fresh = trust.bank.grant_consent(grant.sign(signing))["consent_id"]
    assert trust.bank.query(uscc, fresh).answered


def test_signing_key_rotation(federation: Federation, trust: Trust) -> None:
    uscc, neighbour = _uscc(federation, 1), _uscc(federation, 2)
    enterprise_id = f"ent-{uscc.lower()}"
    client, old = trust.enterprise(uscc)
    other_client, _ = trust.enterprise(neighbour)
    # A rotated key is made like the first: on the enterprise's side, certified by the CAs.
    rotated = federation.layout.identity(enterprise_id, "enterprise", uscc, generation=1)
    new = rotated.signing_key
    # Only the enterprise itself or an operator; only a real key; not the same key.
    assert (
        _status(lambda: other_client.rotate_signing_key(enterprise_id, new.verify_key)).status
        == 403
    )
    assert (
        _status(lambda: trust.bank.rotate_signing_key(enterprise_id, new.verify_key)).status == 403
    )
    assert _status(lambda: client.rotate_signing_key(enterprise_id, old.verify_key)).status == 422
    bad = httpx.post(
        f"{trust.url}/v1/participants/{enterprise_id}/signing-key",
        json={"signing_key": "bm90IGEga2V5"},
        headers={"Authorization": f"Bearer {trust.enterprise_api_key(uscc)}"},
        timeout=10,
    )
    assert bad.status_code == 422
    not_enterprise = _status(lambda: trust.bank.rotate_signing_key("test-bank", new.verify_key))
    assert not_enterprise.status == 422 and "not an enterprise" in not_enterprise.detail
    before = trust.consent(uscc)  # the key is unchanged by all of the above
    assert client.rotate_signing_key(enterprise_id, new.verify_key)["signing_key"] == (
        new.verify_key.to_text()
    )
    with CreditShareClient(
        trust.url, api_key=trust.enterprise_api_key(uscc), identity=rotated
    ) as renewed:
        renewed.upload_credentials()  # the old key's credentials stay: `before` still verifies
    # A grant signed with the old key is refused and not stored; the new key's is served.
    stale = _grant(uscc, trust.bank_id)
    refused = _status(lambda: client.grant_consent(stale.sign(old)))
    assert refused.status == 422 and "signature" in refused.detail
    assert _status(lambda: trust.operator.consent(stale.consent_id)).status == 404
    fresh = client.grant_consent(_grant(uscc, trust.bank_id).sign(new))["consent_id"]
    assert trust.bank.query(uscc, fresh).answered
    assert trust.bank.query(uscc, before).answered  # granted before: stands until revoked
    # An operator may rotate it too (e.g. for an enterprise that lost its key).
    newest = SigningKey.generate()
    trust.operator.rotate_signing_key(enterprise_id, newest.verify_key)
    # ...but until a chain CA certifies the new key, no consent signed with it is taken:
    # every node would refuse it.
    uncertified = _status(lambda: client.grant_consent(_grant(uscc, trust.bank_id).sign(newest)))
    assert uncertified.status == 422 and "credential" in uncertified.detail
    # Back to the key the session's Trust holds, for any later test on this enterprise.
    trust.operator.rotate_signing_key(enterprise_id, old.verify_key)
    assert trust.consent(uscc)


def test_nul_and_garbage_in_ids_and_names_are_4xx(chain: Chain) -> None:
    """On PostgreSQL a NUL reaching the driver would be a 500: each is refused first."""
    key = chain.operator_key
    before = chain.count("SELECT count(*) FROM participant")
    named = chain.post(
        0, "/v1/participants", key, json={"id": "b", "role": "bank", "name": "a\x00b"}
    )
    assert named.status_code == 422 and "control character" in named.json()["detail"]
    for path, status in (
        ("/v1/participants/a%00b/disable", 422),  # control characters: refused at the door
        ("/v1/participants/op-1%0A/disable", 422),
        ("/v1/participants/Not..An.Id/disable", 404),  # ids that cannot exist: not looked up
        ("/v1/participants/" + "a" * 300 + "/enable", 422),  # over the path bound
        ("/v1/participants/bank%20x/credentials", 404),
        ("/v1/participants/op-1/credentials/not-a-key-id/revoke", 404),
        ("/v1/participants/op-1/signing-key", 422),  # no body
        ("/v1/consents/not-a-consent-id/revoke", 404),
    ):
        response = chain.post(1, path, key)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    signing = SigningKey.generate()
    entry = {"id": "ent-n", "role": "enterprise", "name": "E", "uscc": USCC}
    entry["signing_key"] = signing.verify_key.to_text()
    assert chain.post(0, "/v1/participants", key, json=entry).status_code == 201
    enterprise_key = chain.post(0, "/v1/participants/ent-n/credentials", key).json()["api_key"]
    for grantee in ("bank\x00x", "Not..An.Id"):
        grant = _grant(USCC, grantee).sign(signing).to_json()
        refused = chain.post(0, "/v1/consents", enterprise_key, json=grant)
        assert refused.status_code == 422, refused.text
    assert chain.count("SELECT count(*) FROM consent") == 0
    assert chain.count("SELECT count(*) FROM participant") == before + 1
    ok = chain.post(1, "/v1/participants", key, json={"id": "b", "role": "bank", "name": "B"})
    assert ok.status_code == 201
