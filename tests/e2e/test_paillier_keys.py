"""Registered Paillier keys against a running federation: each key is checked once, at
registration; queries name a registered key by fingerprint, and a request naming any
other key is refused before anything is spent or recorded."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gmpy2
import httpx
import pytest

from creditshare.client import CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError

from .conftest import Trust, fresh_modulus


def _prime(bits: int) -> int:
    return int(gmpy2.next_prime(secrets.randbits(bits) | (1 << (bits - 1))))


def _text(n: int) -> str:
    return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()


#: Moduli that are not Paillier keys, each with what the refusal must mention.
BAD_KEYS: dict[str, tuple[Callable[[], int], str]] = {
    "1024 bits": (lambda: _prime(512) * _prime(512), "at least 2048"),
    "4104 bits": (lambda: _prime(2052) * _prime(2052), "at most 4096"),
    "even": (lambda: 2 * _prime(2047), "factor"),
    "perfect square": (lambda: _prime(1025) ** 2, "power"),
    "perfect cube": (lambda: _prime(684) ** 3, "power"),  # 2050 to 2052 bits
    "prime": (lambda: _prime(2048), "prime"),
    "factor 65537": (lambda: 65537 * _prime(2040), "factor"),
}


@pytest.fixture(scope="module")
def bank2(trust: Trust) -> Iterator[CreditShareClient]:
    issued = trust.operator.register_participant("keys-bank-2", "bank", "Second Bank")
    with CreditShareClient(trust.url, api_key=issued["api_key"]) as client:
        yield client


def _register(trust: Trust, api_key: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{trust.url}/v1/paillier-keys",
        json={"public_key": text},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_bad_keys_are_refused_once_at_registration(trust: Trust, case: str) -> None:
    make, fragment = BAD_KEYS[case]
    before = trust.bank.paillier_keys()
    response = _register(trust, trust.bank_api_key, _text(make()))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.json()["detail"]
    assert trust.bank.paillier_keys() == before  # nothing stored
    # The service still serves the next good request.
    good = _register(trust, trust.bank_api_key, _text(fresh_modulus()))
    assert good.status_code == 201, good.text
    trust.bank.retire_paillier_key(good.json()["fingerprint"])


def test_not_base64_is_422(trust: Trust) -> None:
    response = _register(trust, trust.bank_api_key, "not base64!")
    assert response.status_code == 422
    assert "base64" in response.json()["detail"]


def test_registration_is_idempotent_and_owned(
    trust: Trust, bank2: CreditShareClient, bank_key: PrivateKey
) -> None:
    text = bank_key.public_key.to_text()
    again = _register(trust, trust.bank_api_key, text)
    assert again.status_code == 200  # the Trust fixture registered it already
    assert again.json()["fingerprint"] == bank_key.public_key.fingerprint()
    # Another participant cannot claim a key that is someone else's.
    with pytest.raises(ProblemError) as claimed:
        bank2.post("/v1/paillier-keys", {"public_key": text})
    assert claimed.value.status == 409
    # Enterprises and operators do not register Paillier keys.
    with pytest.raises(ProblemError) as role:
        trust.operator.post("/v1/paillier-keys", {"public_key": _text(fresh_modulus())})
    assert role.value.status == 403


def test_active_keys_are_bounded(trust: Trust) -> None:
    issued = trust.operator.register_participant("keys-bank-many", "bank", "Many Keys")
    with CreditShareClient(trust.url, api_key=issued["api_key"]) as client:
        fingerprints = [
            client.post("/v1/paillier-keys", {"public_key": _text(fresh_modulus())})["fingerprint"]
            for _ in range(4)
        ]
        with pytest.raises(ProblemError) as full:
            client.post("/v1/paillier-keys", {"public_key": _text(fresh_modulus())})
        assert full.value.status == 409 and "retire" in full.value.detail
        client.post(f"/v1/paillier-keys/{fingerprints[0]}/retire")
        fifth = client.post("/v1/paillier-keys", {"public_key": _text(fresh_modulus())})
        assert fifth["active"]
        listed = client.paillier_keys()
        assert [k["fingerprint"] for k in listed if not k["active"]] == [fingerprints[0]]


def _ledger_size(trust: Trust) -> int:
    try:
        return int(trust.bank.ledger_head()["size"])
    except ProblemError as exc:
        assert exc.status == 404  # nothing recorded yet
        return 0


def _query(trust: Trust, uscc: str, consent: str, fingerprint: str) -> httpx.Response:
    return httpx.post(
        f"{trust.url}/v1/queries",
        json=trust.signed(
            {
                "uscc": uscc,
                "model_id": "sme-scorecard-v1",
                "purpose": "pre_loan_review",
                "consent_id": consent,
                "key_fingerprint": fingerprint,
            }
        ),
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
        timeout=30,
    )


def test_queries_name_a_registered_active_key(
    federation: Federation, trust: Trust, bank2: CreditShareClient
) -> None:
    uscc = read_enterprises(federation.layout.data_dir)[7]["uscc"]
    consent = trust.consent(uscc, max_uses=5)
    owner, _ = trust.enterprise(uscc)
    other = bank2.post("/v1/paillier-keys", {"public_key": _text(fresh_modulus())})["fingerprint"]
    spare = PrivateKey.generate()
    registered = _register(trust, trust.bank_api_key, spare.public_key.to_text())
    assert registered.status_code == 201, registered.text
    trust.bank.retire_paillier_key(spare.public_key.fingerprint())

    size = _ledger_size(trust)
    for fingerprint, fragment in (
        ("0123456789abcdef", "no Paillier key"),  # never registered
        (other, "no Paillier key"),  # someone else's
        (spare.public_key.fingerprint(), "retired"),
    ):
        response = _query(trust, uscc, consent, fingerprint)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["field"] == "key_fingerprint" and fragment in problem["detail"]
    # Nothing was spent or recorded: same ledger, no consent use.
    assert _ledger_size(trust) == size
    assert owner.consent(consent)["uses"] == 0
    # The next good request is served, under the registered key.
    good = _query(trust, uscc, consent, trust.bank.ensure_paillier_key())
    assert good.status_code == 200, good.text
    assert good.json()["public_key_fingerprint"] == trust.bank.private_key.public_key.fingerprint()


def test_cli_registers_lists_and_retires(trust: Trust, tmp_path: Path) -> None:
    issued = trust.operator.register_participant("keys-cli-bank", "bank", "CLI Bank")
    env = {**os.environ, "CREDITSHARE_API_KEY": issued["api_key"]}
    key_file = tmp_path / "paillier.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "creditshare", "keys", *args, "--coordinator", trust.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    registered = cli("register", "--key-file", str(key_file))
    assert registered.returncode == 0, registered.stderr
    fingerprint = registered.stdout.strip().splitlines()[-1]
    assert fingerprint == PrivateKey.from_json_bytes(key_file.read_bytes()).public_key.fingerprint()
    listed = cli("list")
    assert "fingerprint" in listed.stdout and fingerprint in listed.stdout  # a table
    [key] = json.loads(cli("list", "--json").stdout)
    assert (key["fingerprint"], key["bits"], key["retired_at"]) == (fingerprint, 2048, None)
    assert cli("retire", "--fingerprint", fingerprint).returncode == 0
    [key] = json.loads(cli("list", "--json").stdout)
    assert key["retired_at"] is not None
    assert "retired" in cli("list").stdout
    unknown = cli("retire", "--fingerprint", "0123456789abcdef")
    assert unknown.returncode != 0 and "no Paillier key" in unknown.stderr


def test_concurrent_registrations_respect_the_bound(trust: Trust) -> None:
    issued = trust.operator.register_participant("keys-bank-race", "bank", "Racing Bank")
    texts = [_text(fresh_modulus()) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(
            r.status_code for r in pool.map(lambda t: _register(trust, issued["api_key"], t), texts)
        )
    assert statuses == [201] * 4 + [409] * 4
    with CreditShareClient(trust.url, api_key=issued["api_key"]) as client:
        assert sum(k["active"] for k in client.paillier_keys()) == 4
