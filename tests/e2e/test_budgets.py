"""Budgets against a running federation: a refused request spends nothing that belongs to
someone else, one lender cannot exhaust another's budget, refusals cannot flood an access
log, and failed authentication is throttled per key id and per client address.

Once with limits counted in the coordinator process (SQLite database) and once counted
in a PostgreSQL database that replicas would share (``rate_limit_store = "database"``).
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from creditshare.client import CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.errors import ProblemError
from creditshare.identity import Chain

from .._databases import fresh_postgres_database
from .conftest import E2E_DEPARTMENTS, Trust

LIMITS = {
    "enterprise_queries_per_day": 2,
    "refusals_per_day": 3,
    "auth_failures_per_key_id_per_minute": 3,
    "auth_failures_per_address_per_minute": 5,
}


@pytest.fixture(scope="module", params=["memory", "database"])
def budget_federation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[Federation]:
    overrides: dict[str, object] = dict(LIMITS)
    with ExitStack() as stack:
        if request.param == "database":
            url = stack.enter_context(fresh_postgres_database())
            overrides |= {"database_url": url, "rate_limit_store": "database"}
        layout = FederationLayout.write(
            tmp_path_factory.mktemp(f"budgets-{request.param}"),
            data_dir,
            chains=[Chain.YRD],
            departments=E2E_DEPARTMENTS,
            coordinator_overrides=overrides,
        )
        layout.import_data()
        yield stack.enter_context(Federation(layout))


@pytest.fixture(scope="module")
def budget_trust(budget_federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    state = Trust(budget_federation, bank_key, "bank-a")
    yield state
    state.close()


@pytest.fixture(scope="module")
def usccs(budget_federation: Federation) -> list[str]:
    rows = read_enterprises(budget_federation.layout.data_dir)
    return [r["uscc"] for r in rows if r["record_chains"] == "yrd"][:10]


def _status(call: Callable[[], object]) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        call()
    return caught.value


def _refusals(trust: Trust, uscc: str) -> int:
    client, _ = trust.enterprise(uscc)
    return sum(e["record"]["kind"] == "refusal" for e in client.enterprise_queries(uscc))


def _lender(trust: Trust, participant_id: str) -> CreditShareClient:
    issued = trust.operator.register_participant(participant_id, "bank", participant_id)
    key = PrivateKey.generate(2048)  # a Paillier key belongs to one participant
    client = CreditShareClient(
        trust.url,
        api_key=issued["api_key"],
        private_key=key,
        identity=trust.layout.identity(participant_id, "bank"),
    )
    client.register_paillier_key()
    return client


def test_a_used_up_consent_spends_no_budget_and_refusals_are_bounded(
    budget_trust: Trust, usccs: list[str]
) -> None:
    trust, uscc = budget_trust, usccs[0]
    used = trust.consent(uscc, max_uses=1)
    trust.bank.query(uscc, used)  # 1 of the bank's 2 queries about this enterprise
    for _ in range(LIMITS["refusals_per_day"]):
        refused = _status(lambda: trust.bank.query(uscc, used))
        assert refused.status == 403 and "use limit" in refused.detail
    assert trust.bank.consent(used)["uses"] == 1
    assert _refusals(trust, uscc) == LIMITS["refusals_per_day"]
    # Beyond the bound: 429, and nothing written to the ledger or the access log.
    size = trust.bank.ledger_head()["size"]
    flooded = _status(lambda: trust.bank.query(uscc, used))
    assert flooded.status == 429 and "not recorded" in flooded.detail
    assert int(flooded.body["retry_after"]) > 0  # type: ignore[call-overload]
    assert trust.bank.ledger_head()["size"] == size
    assert _refusals(trust, uscc) == LIMITS["refusals_per_day"]
    # The refusals spent none of the budget: a good consent still gets its query...
    fresh = trust.consent(uscc)
    assert trust.bank.query(uscc, fresh).answered
    # ...and then the bank's own budget for this enterprise is spent (no use counted)...
    over = _status(lambda: trust.bank.query(uscc, fresh))
    assert over.status == 429 and "enterprise" in over.detail
    assert trust.bank.consent(fresh)["uses"] == 1
    assert trust.bank.ledger_head()["size"] == size + 1
    # ...but not another lender's: it is served about the same enterprise.
    with _lender(trust, "bank-b") as other:
        consent = trust.consent(uscc, grantee="bank-b")
        assert other.query(uscc, consent).answered


def test_losing_the_race_for_the_last_use_spends_no_budget(
    budget_trust: Trust, usccs: list[str]
) -> None:
    trust, uscc = budget_trust, usccs[1]
    last = trust.consent(uscc, max_uses=1)
    barrier = threading.Barrier(2)  # as many as the budget: neither is refused for it
    outcomes: list[int] = []

    def attempt() -> None:
        barrier.wait()
        try:
            trust.bank.query(uscc, last)
            outcomes.append(200)
        except ProblemError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert Counter(outcomes) == {200: 1, 403: 1}, outcomes
    assert trust.bank.consent(last)["uses"] == 1
    # Only the winner spent the budget (2 per day): one more query passes, then 429.
    fresh = trust.consent(uscc)
    assert trust.bank.query(uscc, fresh).answered
    assert _status(lambda: trust.bank.query(uscc, fresh)).status == 429


def _from(address: str) -> httpx.Client:
    """A client whose requests come from another loopback address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def _get(client: httpx.Client, url: str, api_key: str) -> httpx.Response:
    return client.get(f"{url}/v1/nodes", headers={"Authorization": f"Bearer {api_key}"})


def test_failed_authentication_is_throttled_per_key_id(budget_trust: Trust) -> None:
    trust = budget_trust
    owner_key = trust.operator.register_participant("bank-c", "bank", "C")["api_key"]
    key_id = owner_key.split(".")[0]
    forged = f"{key_id}.{secrets.token_urlsafe(32)}"
    with _from("127.0.0.5") as owner:  # where the owner uses its key
        assert _get(owner, trust.url, owner_key).status_code == 200
    with _from("127.0.0.3") as attacker:
        for _ in range(LIMITS["auth_failures_per_key_id_per_minute"]):
            assert _get(attacker, trust.url, forged).status_code == 401
        throttled = _get(attacker, trust.url, forged)
        assert throttled.status_code == 429
        assert throttled.headers["content-type"] == "application/problem+json"
        assert 0 < int(throttled.headers["retry-after"]) <= 60
        assert "key id" in throttled.json()["detail"]
        # Even the right secret, from the attacker's address, waits.
        assert _get(attacker, trust.url, owner_key).status_code == 429
    # The owner, from where it used its key before, is not locked out...
    with _from("127.0.0.5") as owner:
        assert _get(owner, trust.url, owner_key).status_code == 200
    # ...a new address of the key waits for the window (documented)...
    with _from("127.0.0.6") as new_place:
        assert _get(new_place, trust.url, owner_key).status_code == 429
    # ...and everyone else is served, from the attacker's address too.
    with _from("127.0.0.3") as same_address:
        assert _get(same_address, trust.url, trust.bank_api_key).status_code == 200


def test_failed_authentication_is_throttled_per_address(budget_trust: Trust) -> None:
    trust = budget_trust
    with _from("127.0.0.2") as attacker:
        # Every failure counts against the address, a token that is not a key too.
        for k in range(LIMITS["auth_failures_per_address_per_minute"]):
            guess = "not-a-key" if k % 2 else f"cs_{secrets.token_hex(8)}.{'A' * 43}"
            assert _get(attacker, trust.url, guess).status_code == 401
        throttled = _get(attacker, trust.url, f"cs_{secrets.token_hex(8)}.{'A' * 43}")
        assert throttled.status_code == 429 and "address" in throttled.json()["detail"]
        assert _get(attacker, trust.url, "not-a-key").status_code == 429
        # A valid key from that address waits too; from another address it is served.
        assert _get(attacker, trust.url, trust.bank_api_key).status_code == 429
    with _from("127.0.0.1") as elsewhere:
        assert _get(elsewhere, trust.url, trust.bank_api_key).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(budget_trust: Trust) -> None:
    """The coordinator trusts X-Forwarded-For from ``forwarded_allow_ips`` (here the
    default, 127.0.0.1, standing in for the load balancer) and from nobody else."""
    trust = budget_trust

    def get(client: httpx.Client, api_key: str, forwarded_for: str) -> int:
        headers = {"Authorization": f"Bearer {api_key}", "X-Forwarded-For": forwarded_for}
        return client.get(f"{trust.url}/v1/nodes", headers=headers).status_code

    def guess() -> str:
        return f"cs_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"

    with _from("127.0.0.1") as proxy:
        for _ in range(LIMITS["auth_failures_per_address_per_minute"]):
            assert get(proxy, guess(), "198.51.100.7") == 401
        assert get(proxy, trust.bank_api_key, "198.51.100.7") == 429
        # Other clients behind the same proxy are not held up by that one.
        assert get(proxy, trust.bank_api_key, "198.51.100.8") == 200
    # An untrusted sender cannot pick the address it is counted under.
    with _from("127.0.0.4") as spoofer:
        for _ in range(LIMITS["auth_failures_per_address_per_minute"]):
            assert get(spoofer, guess(), secrets.choice(["203.0.113.1", "203.0.113.2"])) == 401
        assert get(spoofer, trust.bank_api_key, "203.0.113.3") == 429
