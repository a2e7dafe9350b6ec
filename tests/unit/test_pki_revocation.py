"""``revoke`` and ``issue_revocation_list``: the CA's record and its signed, dated lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.pki import (
    CaFiles,
    RevocationList,
    init_ca,
    issue_revocation_list,
    revoke,
)
from tests._pki import make_credential, make_tls

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CaFiles:
    return init_ca("yrd", tmp_path / "ca", now=NOW - timedelta(days=1))


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_an_empty_first_list(tmp_path: Path, ca: CaFiles) -> None:
    crl = issue_revocation_list(ca.directory, tmp_path / "out" / "crl.pem", now=NOW)
    assert (crl.number, crl.revoked_serials) == (1, frozenset())
    assert crl.this_update == NOW and crl.next_update == NOW + timedelta(hours=24)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    assert crl.issuer_fingerprint == ca_cert.fingerprint(hashes.SHA256()).hex()
    parsed = x509.load_pem_x509_crl((tmp_path / "out" / "crl.pem").read_bytes())
    assert parsed.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert parsed.issuer == ca_cert.subject
    assert RevocationList.parse(parsed.public_bytes(serialization.Encoding.DER)).number == 1


def test_revocations_appear_with_reason_and_numbers_grow(tmp_path: Path, ca: CaFiles) -> None:
    _, bank = make_credential(ca.directory, tmp_path, "bank-a", "bank", now=NOW)
    node = make_tls(ca.directory, tmp_path / "node", "yrd-tax", "node", now=NOW)
    first = issue_revocation_list(ca.directory, tmp_path / "1.crl", now=NOW)
    entry = revoke(ca.directory, serial=_serial(bank), reason="key_compromise", now=NOW)
    assert (entry.serial, entry.reason, entry.revoked_at) == (_serial(bank), "key_compromise", NOW)
    revoke(ca.directory, cert=node.cert, now=NOW)
    second = issue_revocation_list(
        ca.directory, tmp_path / "2.crl", valid_hours=168, now=NOW + timedelta(hours=1)
    )
    assert second.number == first.number + 1
    assert second.revoked_serials == {_serial(bank), node.serial}
    assert second.next_update == NOW + timedelta(hours=169)
    crl = x509.load_pem_x509_crl((tmp_path / "2.crl").read_bytes())
    bank_entry = crl.get_revoked_certificate_by_serial_number(_serial(bank))
    assert bank_entry is not None
    reason = bank_entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert bank_entry.revocation_date_utc == NOW
    assert (ca.directory / "crl-number").read_text().strip() == "2"


def test_revoking_twice_keeps_the_first_entry(tmp_path: Path, ca: CaFiles) -> None:
    _, bank = make_credential(ca.directory, tmp_path, "bank-a", "bank", now=NOW)
    first = revoke(ca.directory, serial=_serial(bank), now=NOW)
    again = revoke(ca.directory, serial=_serial(bank), reason="superseded", now=NOW + timedelta(1))
    assert again == first
    assert len(json.loads((ca.directory / "revoked.json").read_text())) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "by serial or by file"),
        ({"serial": 5, "cert": Path("x.crt")}, "by serial or by file"),
        ({"serial": 12345}, "never issued serial 3039"),
        ({"serial": -1}, "positive integer"),
        ({"serial": 1, "reason": "because"}, "reason must be one of"),
        ({"serial": 1, "reason": "remove_from_crl"}, "reason must be one of"),
    ],
)
def test_revoke_refusals(ca: CaFiles, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        revoke(ca.directory, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert not (ca.directory / "revoked.json").exists()


def test_revoke_refuses_another_cas_certificate(tmp_path: Path, ca: CaFiles) -> None:
    other = init_ca("yrd", tmp_path / "twin", now=NOW - timedelta(days=1))  # same name, other key
    foreign = make_tls(other.directory, tmp_path / "node", "yrd-tax", "node", now=NOW)
    with pytest.raises(InvalidInputError, match="was not issued by the CA"):
        revoke(ca.directory, cert=foreign.cert, now=NOW)
    assert not (ca.directory / "revoked.json").exists()


def test_damaged_state_is_a_configuration_error(tmp_path: Path, ca: CaFiles) -> None:
    (ca.directory / "crl-number").write_text("seven\n")
    with pytest.raises(ConfigurationError, match="CRL number file"):
        issue_revocation_list(ca.directory, tmp_path / "crl.pem", now=NOW)
    (ca.directory / "crl-number").unlink()
    (ca.directory / "revoked.json").write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="revocation state"):
        issue_revocation_list(ca.directory, tmp_path / "crl.pem", now=NOW)
    assert not (tmp_path / "crl.pem").exists()


@pytest.mark.parametrize("hours", [0, -1, 24 * 31 + 1, True])
def test_valid_hours_bounded(tmp_path: Path, ca: CaFiles, hours: int) -> None:
    with pytest.raises(InvalidInputError, match="valid_hours"):
        issue_revocation_list(ca.directory, tmp_path / "crl.pem", valid_hours=hours, now=NOW)
    assert not (ca.directory / "crl-number").exists()


def _hand_made_crl(ca: CaFiles, *, number: bool = True) -> bytes:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(hours=1))
    )
    if number:
        builder = builder.add_extension(x509.CRLNumber(1), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def test_parse_refuses_lists_that_cannot_be_ordered(ca: CaFiles) -> None:
    with pytest.raises(InvalidInputError, match="no CRL number"):
        RevocationList.parse(_hand_made_crl(ca, number=False))
    assert RevocationList.parse(_hand_made_crl(ca)).issuer_fingerprint == ""
