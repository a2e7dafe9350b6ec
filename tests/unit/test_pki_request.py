"""``request``: a party's own keys and CSRs, made where they are used, never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from creditshare.crypto import SigningKey
from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.pki import CREDENTIAL_ROLES, request

USCC = "91350100M000100Y43"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _csr(path: Path | None) -> x509.CertificateSigningRequest:
    assert path is not None
    return x509.load_pem_x509_csr(path.read_bytes())


def _attr(csr: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> list[object]:
    return [a.value for a in csr.subject.get_attributes_for_oid(oid)]


@pytest.mark.parametrize("role", [r for r in CREDENTIAL_ROLES if r not in ("node", "enterprise")])
def test_credential_roles_get_a_signing_pair_only(tmp_path: Path, role: str) -> None:
    files = request(tmp_path / "keys", "party-1", role)
    assert files.tls_key is None and files.tls_csr is None
    assert files.signing_key is not None and files.signing_csr is not None
    assert files.signing_key.name == "signing.key" and files.signing_csr.name == "signing.csr"
    assert _mode(files.signing_key) == 0o600
    assert _mode(files.signing_key.parent) == 0o700
    assert _mode(files.signing_csr) == 0o644
    key = SigningKey.from_pem(files.signing_key.read_bytes())  # PKCS#8 PEM, Ed25519
    csr = _csr(files.signing_csr)
    assert csr.is_signature_valid
    public = csr.public_key()
    assert isinstance(public, Ed25519PublicKey)
    assert key.verify_key.raw == public.public_bytes_raw()
    assert _attr(csr, NameOID.COMMON_NAME) == ["party-1"]
    assert _attr(csr, NameOID.ORGANIZATION_NAME) == ["creditshare"]
    assert _attr(csr, NameOID.ORGANIZATIONAL_UNIT_NAME) == [role]
    assert _attr(csr, NameOID.SERIAL_NUMBER) == []
    assert list(csr.extensions) == []
    assert sorted(p.name for p in files.directory.iterdir()) == ["signing.csr", "signing.key"]


def test_enterprise_request_names_its_uscc_canonically(tmp_path: Path) -> None:
    files = request(tmp_path / "keys", "ent-1", "enterprise", uscc=f" {USCC.lower()} ")
    assert _attr(_csr(files.signing_csr), NameOID.SERIAL_NUMBER) == [USCC]


def test_node_gets_a_signing_pair_and_a_tls_pair(tmp_path: Path) -> None:
    files = request(tmp_path / "keys", "yrd-tax", "node", hosts=["yrd-tax", "10.0.0.7"])
    assert files.tls_key is not None and files.signing_key is not None
    assert _mode(files.tls_key) == 0o600 and _mode(files.signing_key) == 0o600
    assert [p.name for p in files.csrs] == ["signing.csr", "tls.csr"]
    tls = _csr(files.tls_csr)
    public = tls.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1)
    assert _attr(tls, NameOID.ORGANIZATIONAL_UNIT_NAME) == ["node"]
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["yrd-tax"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert isinstance(_csr(files.signing_csr).public_key(), Ed25519PublicKey)


def test_coordinator_gets_a_tls_pair_only_with_default_hosts(tmp_path: Path) -> None:
    files = request(tmp_path / "keys", "coordinator-yrd", "coordinator")
    assert files.signing_key is None and files.signing_csr is None
    san = _csr(files.tls_csr).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sorted(p.name for p in files.directory.iterdir()) == ["tls.csr", "tls.key"]


@pytest.mark.parametrize(
    ("participant_id", "role", "kwargs", "match"),
    [
        ("Bank-A", "bank", {}, "participant id"),
        ("", "bank", {}, "participant id"),
        ("a" * 65, "bank", {}, "participant id"),
        ("bank/../x", "bank", {}, "participant id"),
        ("bank-a", "admin", {}, "role must be one of"),
        ("bank-a", "ca", {}, "role must be one of"),
        ("ent-1", "enterprise", {}, "needs the enterprise's USCC"),
        ("ent-1", "enterprise", {"uscc": "91350100M000100Y44"}, "USCC is invalid"),
        ("bank-a", "bank", {"uscc": USCC}, "carries no USCC"),
        ("bank-a", "bank", {"hosts": ["bank.example"]}, "no TLS certificate"),
        ("yrd-tax", "node", {"hosts": "yrd-tax"}, "sequence"),
        ("yrd-tax", "node", {"hosts": ["bad host"]}, "host"),
    ],
)
def test_bad_requests_write_nothing(
    tmp_path: Path, participant_id: str, role: str, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        request(tmp_path / "keys", participant_id, role, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize("role", ["bank", "node", "coordinator"])
def test_existing_keys_are_never_overwritten(tmp_path: Path, role: str) -> None:
    first = request(tmp_path / "keys", "p-1", role)
    before = {p.name: p.read_bytes() for p in first.directory.iterdir()}
    with pytest.raises(ConfigurationError, match="already exists"):
        request(tmp_path / "keys", "p-1", role)
    assert {p.name: p.read_bytes() for p in first.directory.iterdir()} == before


def test_a_stray_key_of_the_other_kind_also_blocks_a_node_request(tmp_path: Path) -> None:
    request(tmp_path / "keys", "coordinator-yrd", "coordinator")  # leaves tls.key
    with pytest.raises(ConfigurationError, match=r"tls\.key already exists"):
        request(tmp_path / "keys", "yrd-tax", "node")
    assert not (tmp_path / "keys" / "signing.key").exists()


def test_each_request_makes_a_fresh_key(tmp_path: Path) -> None:
    a = request(tmp_path / "a", "bank-a", "bank")
    b = request(tmp_path / "b", "bank-a", "bank")
    assert a.signing_key is not None and b.signing_key is not None
    assert a.signing_key.read_bytes() != b.signing_key.read_bytes()
