"""The chain PKI: the CA, TLS certificates (request + sign), chain separation, loading back.

Credentials, CSR refusals, revocation and the CLI have files of their own (test_pki_*.py).
"""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from pydantic import ValidationError

from creditshare.errors import ConfigurationError, InvalidInputError
from creditshare.identity import Chain
from creditshare.pki import (
    CLOCK_SKEW,
    CaFiles,
    TlsSettings,
    certificate_info,
    channel_credentials,
    init_ca,
    load_identity,
    request,
    server_credentials,
    sign,
)
from tests._pki import TlsFiles, make_tls

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def yrd_ca(tmp_path: Path) -> CaFiles:
    return init_ca("yrd", tmp_path / "yrd-ca", now=NOW)


@pytest.fixture
def prd_ca(tmp_path: Path) -> CaFiles:
    return init_ca("prd", tmp_path / "prd-ca", now=NOW)


@pytest.fixture
def node(tmp_path: Path, yrd_ca: CaFiles) -> TlsFiles:
    return make_tls(yrd_ca.directory, tmp_path / "node", "yrd-tax", "node", now=NOW, valid_days=825)


@pytest.fixture
def coordinator(tmp_path: Path, yrd_ca: CaFiles) -> TlsFiles:
    return make_tls(yrd_ca.directory, tmp_path / "coord", "coordinator", "coordinator", now=NOW)


# --- the CA ------------------------------------------------------------------------------


def test_ca_subject_key_and_extensions(yrd_ca: CaFiles) -> None:
    assert yrd_ca.chain is Chain.YRD
    assert yrd_ca.cert.name == "ca.crt" and yrd_ca.key.name == "ca.key"
    ca = _load(yrd_ca.cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "creditshare yrd chain CA"
    )
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "creditshare"
    assert ca.issuer == ca.subject
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(public)
    ca.verify_directly_issued_by(ca)  # self-signed


def test_ca_key_is_pkcs8_pem_0600_in_0700_dir(yrd_ca: CaFiles) -> None:
    assert _mode(yrd_ca.key) == 0o600
    assert _mode(yrd_ca.directory) == 0o700
    assert yrd_ca.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert yrd_ca.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_ca_overwrite_refused_unless_asked(yrd_ca: CaFiles) -> None:
    before = yrd_ca.key.read_bytes()
    with pytest.raises(ConfigurationError, match="already exists"):
        init_ca("yrd", yrd_ca.directory, now=NOW)
    assert yrd_ca.key.read_bytes() == before
    replaced = init_ca("yrd", yrd_ca.directory, now=NOW, overwrite=True)
    assert replaced.key.read_bytes() != before
    assert _mode(replaced.key) == 0o600


def test_ca_refused_when_only_the_key_is_left(tmp_path: Path) -> None:
    files = init_ca("bth", tmp_path / "ca", now=NOW)
    files.cert.unlink()
    with pytest.raises(ConfigurationError, match=r"ca\.key"):
        init_ca("bth", tmp_path / "ca", now=NOW)


@pytest.mark.parametrize("chain", ["", "YRD", "xyz", "yrd "])
def test_unknown_chain_refused(tmp_path: Path, chain: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown chain"):
        init_ca(chain, tmp_path / "ca")
    assert not (tmp_path / "ca").exists()


def test_ca_validity_window_follows_now(tmp_path: Path) -> None:
    files = init_ca("prd", tmp_path / "ca", now=NOW, valid_days=10)
    ca = _load(files.cert)
    assert ca.not_valid_before_utc == NOW - CLOCK_SKEW
    assert ca.not_valid_after_utc == NOW + timedelta(days=10)


@pytest.mark.parametrize(
    "now", [datetime(2030, 1, 1), "2030-01-01"], ids=["naive-datetime", "string"]
)
def test_bad_now_refused(tmp_path: Path, now: object) -> None:
    with pytest.raises(InvalidInputError, match="now must be"):
        init_ca("yrd", tmp_path / "ca", now=now)  # type: ignore[arg-type]


@pytest.mark.parametrize("days", [0, -1, True, 40_000])
def test_bad_valid_days_refused(tmp_path: Path, days: int) -> None:
    with pytest.raises(InvalidInputError, match="valid_days"):
        init_ca("yrd", tmp_path / "ca", valid_days=days)


# --- leaf certificates ---------------------------------------------------------------------


def test_node_certificate_contents(yrd_ca: CaFiles, node: TlsFiles) -> None:
    assert (node.name, node.role) == ("yrd-tax", "node")
    assert node.cert.name == "tls.crt" and node.key.name == "tls.key"
    assert node.ca.read_bytes() == yrd_ca.cert.read_bytes()
    leaf, ca = _load(node.cert), _load(yrd_ca.cert)

    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "yrd-tax"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "creditshare"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "node"
    assert leaf.issuer == ca.subject
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)

    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    leaf.verify_directly_issued_by(ca)


def test_coordinator_certificate_is_client_and_server(
    yrd_ca: CaFiles, coordinator: TlsFiles
) -> None:
    leaf = _load(coordinator.cert)
    ou = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert ou == "coordinator"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    leaf.verify_directly_issued_by(_load(yrd_ca.cert))


def test_leaves_pass_a_full_path_validation(
    yrd_ca: CaFiles, node: TlsFiles, coordinator: TlsFiles
) -> None:
    """cryptography's RFC 5280 verifier accepts the profile, and enforces the EKU split."""
    store = Store([_load(yrd_ca.cert)])
    at = NOW + timedelta(days=1)
    server = PolicyBuilder().store(store).time(at).build_server_verifier(x509.DNSName("localhost"))
    server.verify(_load(node.cert), [])
    client = PolicyBuilder().store(store).time(at).build_client_verifier()
    client.verify(_load(coordinator.cert), [])
    with pytest.raises(VerificationError, match="EKU"):
        client.verify(_load(node.cert), [])  # a node certificate cannot act as a client


def test_other_chain_ca_does_not_verify(prd_ca: CaFiles, node: TlsFiles) -> None:
    leaf = _load(node.cert)
    with pytest.raises(ValueError, match="does not match certificate issuer"):
        leaf.verify_directly_issued_by(_load(prd_ca.cert))
    verifier = (
        PolicyBuilder()
        .store(Store([_load(prd_ca.cert)]))
        .time(NOW)
        .build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        verifier.verify(leaf, [])


def test_reinitialised_ca_does_not_verify_old_leaves(
    tmp_path: Path, yrd_ca: CaFiles, node: TlsFiles
) -> None:
    """Same chain, same CA name, new key: the signature check is what fails."""
    fresh = init_ca("yrd", tmp_path / "yrd-ca-2", now=NOW)
    with pytest.raises(InvalidSignature):
        _load(node.cert).verify_directly_issued_by(_load(fresh.cert))


def test_leaf_key_0600_and_dir_0700(node: TlsFiles) -> None:
    assert _mode(node.key) == 0o600
    assert _mode(node.key.parent) == 0o700
    assert _mode(node.cert) == 0o644


def _tls(ca: CaFiles, out: Path, name: str = "n1", **kwargs: object) -> TlsFiles:
    return make_tls(ca.directory, out, name, "node", **kwargs)  # type: ignore[arg-type]


def test_hosts_become_dns_and_ip_sans(tmp_path: Path, yrd_ca: CaFiles) -> None:
    hosts = ["Node-1.yrd.example", "10.0.0.7", "::1", "node-1.yrd.example"]
    files = _tls(yrd_ca, tmp_path / "n1", hosts=hosts, now=NOW)
    san = _load(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-1.yrd.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    ]


@pytest.mark.parametrize("hosts", ["localhost", ["bad host"], ["-x.example"], [""], ["[::1]"]])
def test_bad_hosts_refused(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(InvalidInputError, match="host"):
        request(tmp_path / "n1", "n1", "node", hosts=hosts)
    assert not (tmp_path / "n1").exists()


def test_longest_name_accepted(tmp_path: Path, yrd_ca: CaFiles) -> None:
    name = "a" * 64
    files = _tls(yrd_ca, tmp_path / "out", name, now=NOW)
    assert certificate_info(files.cert)["subject"].endswith(f"CN={name}")


def test_sign_without_a_ca_is_a_configuration_error(tmp_path: Path) -> None:
    files = request(tmp_path / "n1", "n1", "node")
    assert files.tls_csr is not None
    with pytest.raises(ConfigurationError, match="CA certificate not found"):
        sign(tmp_path / "nowhere", files.tls_csr.read_bytes(), tmp_path / "n1" / "tls.crt", now=NOW)


def test_sign_refuses_a_ca_whose_key_was_swapped(
    tmp_path: Path, yrd_ca: CaFiles, prd_ca: CaFiles
) -> None:
    yrd_ca.key.write_bytes(prd_ca.key.read_bytes())
    with pytest.raises(ConfigurationError, match="does not match"):
        _tls(yrd_ca, tmp_path / "out", now=NOW)


def test_sign_refuses_to_clobber_another_cas_certificate(
    tmp_path: Path, yrd_ca: CaFiles, prd_ca: CaFiles
) -> None:
    before = prd_ca.cert.read_bytes()
    files = request(tmp_path / "n1", "n1", "node")
    assert files.tls_csr is not None
    with pytest.raises(ConfigurationError, match="another CA"):
        sign(yrd_ca.directory, files.tls_csr.read_bytes(), prd_ca.directory / "n1.crt", now=NOW)
    assert prd_ca.cert.read_bytes() == before


def test_sign_into_the_ca_directory_keeps_the_ca(tmp_path: Path, yrd_ca: CaFiles) -> None:
    before = yrd_ca.cert.read_bytes()
    files = request(tmp_path / "n1", "n1", "node")
    assert files.tls_csr is not None
    signed = sign(
        yrd_ca.directory, files.tls_csr.read_bytes(), yrd_ca.directory / "n1.crt", now=NOW
    )
    assert signed.ca == yrd_ca.cert
    assert yrd_ca.cert.read_bytes() == before


def test_a_new_request_and_sign_rotates_the_identity(
    tmp_path: Path, yrd_ca: CaFiles, node: TlsFiles
) -> None:
    again = _tls(yrd_ca, node.cert.parent, "yrd-tax", now=NOW)  # request never overwrites:
    assert again.key.parent != node.key.parent  # the new key is made in a new folder
    assert again.key.read_bytes() != node.key.read_bytes()
    load_identity(again.cert, again.key)


# --- validity windows, all through ``now`` ---------------------------------------------------


def test_leaf_validity_window_follows_now(yrd_ca: CaFiles, tmp_path: Path) -> None:
    later = NOW + timedelta(days=100, seconds=7, microseconds=999)
    files = _tls(yrd_ca, tmp_path / "n1", valid_days=30, now=later)
    leaf = _load(files.cert)
    truncated = later.replace(microsecond=0)
    assert leaf.not_valid_before_utc == truncated - CLOCK_SKEW
    assert leaf.not_valid_after_utc == truncated + timedelta(days=30)
    info = certificate_info(files.cert)
    assert info["not_after"] == (truncated + timedelta(days=30)).isoformat()


def test_non_utc_now_is_converted(yrd_ca: CaFiles, tmp_path: Path) -> None:
    shanghai = NOW.astimezone(timezone(timedelta(hours=8)))
    files = _tls(yrd_ca, tmp_path / "n1", valid_days=1, now=shanghai)
    assert _load(files.cert).not_valid_after_utc == NOW + timedelta(days=1)


def test_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    ca = init_ca("bth", tmp_path / "ca", valid_days=30, now=NOW)
    files = _tls(ca, tmp_path / "n1", valid_days=825, now=NOW)
    assert _load(files.cert).not_valid_after_utc == _load(ca.cert).not_valid_after_utc


def test_leaf_not_valid_before_ca(yrd_ca: CaFiles, tmp_path: Path) -> None:
    """Signed 3 minutes into the CA's life, the leaf's own start (now - CLOCK_SKEW) would
    be 2 minutes before the CA's: it is cut back to the CA's start, and only then."""
    early = _load(yrd_ca.cert).not_valid_before_utc + timedelta(minutes=3)
    assert early - CLOCK_SKEW < _load(yrd_ca.cert).not_valid_before_utc
    files = _tls(yrd_ca, tmp_path / "n1", now=early)
    assert _load(files.cert).not_valid_before_utc == _load(yrd_ca.cert).not_valid_before_utc
    later = _tls(yrd_ca, tmp_path / "n2", now=early + CLOCK_SKEW)
    assert _load(later.cert).not_valid_before_utc == early


@pytest.mark.parametrize(
    "when", [NOW + timedelta(days=3651), NOW - timedelta(days=1)], ids=["expired", "not-yet"]
)
def test_sign_refused_outside_the_ca_window(
    yrd_ca: CaFiles, tmp_path: Path, when: datetime
) -> None:
    with pytest.raises(ConfigurationError, match="not valid at"):
        _tls(yrd_ca, tmp_path / "n1", now=when)


def test_validity_is_enforced_by_a_verifier(yrd_ca: CaFiles, node: TlsFiles) -> None:
    store = Store([_load(yrd_ca.cert)])
    leaf = _load(node.cert)
    expiry = leaf.not_valid_after_utc
    builder = PolicyBuilder().store(store)
    builder.time(expiry).build_server_verifier(x509.DNSName("localhost")).verify(leaf, [])
    late = builder.time(expiry + timedelta(seconds=1))
    with pytest.raises(VerificationError, match="not valid at validation time"):
        late.build_server_verifier(x509.DNSName("localhost")).verify(leaf, [])


# --- loading identities back ----------------------------------------------------------------


def test_load_identity_returns_cert_then_key(node: TlsFiles) -> None:
    cert_pem, key_pem = load_identity(node.cert, node.key)
    assert cert_pem == node.cert.read_bytes()
    assert key_pem == node.key.read_bytes()


def test_load_identity_detects_mismatched_key(node: TlsFiles, coordinator: TlsFiles) -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        load_identity(node.cert, coordinator.key)


def test_load_identity_missing_and_garbage(tmp_path: Path, node: TlsFiles) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_identity(tmp_path / "missing.crt", node.key)
    with pytest.raises(ConfigurationError, match="not found"):
        load_identity(node.cert, tmp_path / "missing.key")
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        load_identity(node.key, node.key)
    with pytest.raises(ConfigurationError, match="not a PEM private key"):
        load_identity(node.cert, node.cert)
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_identity(tmp_path, node.key)


def test_encrypted_key_refused_with_a_reason(tmp_path: Path, node: TlsFiles) -> None:
    key = serialization.load_pem_private_key(node.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigurationError, match="encrypted"):
        load_identity(node.cert, locked)


def test_certificate_info(yrd_ca: CaFiles, node: TlsFiles, coordinator: TlsFiles) -> None:
    info = certificate_info(node.cert)
    assert info["subject"] == "OU=node,O=creditshare,CN=yrd-tax"
    assert info["issuer"] == "O=creditshare,CN=creditshare yrd chain CA"
    assert info["sans"] == ["DNS:localhost", "IP:127.0.0.1"]
    assert info["role"] == "node"
    assert info["not_after"] == (NOW + timedelta(days=825)).isoformat()
    assert info["not_before"] == (NOW - CLOCK_SKEW).isoformat()
    assert len(info["sha256"]) == 64
    assert certificate_info(coordinator.cert)["role"] == "coordinator"
    ca_info = certificate_info(yrd_ca.cert)
    assert (ca_info["role"], ca_info["sans"]) == ("ca", [])


# --- credentials and settings ---------------------------------------------------------------


def test_credentials_built_from_good_files(node: TlsFiles, coordinator: TlsFiles) -> None:
    server_credentials(node.cert, node.key, node.ca)
    channel_credentials(coordinator.ca, coordinator.cert, coordinator.key)


def test_credentials_refuse_bad_files(node: TlsFiles, coordinator: TlsFiles) -> None:
    with pytest.raises(ConfigurationError, match="does not match"):
        server_credentials(node.cert, coordinator.key, node.ca)
    with pytest.raises(ConfigurationError, match="not a CA"):
        server_credentials(node.cert, node.key, coordinator.cert)  # a leaf as the trust root
    with pytest.raises(ConfigurationError, match="not found"):
        channel_credentials(node.ca.with_name("nope.crt"), coordinator.cert, coordinator.key)


def test_tls_settings_require_existing_files(tmp_path: Path, node: TlsFiles) -> None:
    settings = TlsSettings(ca=node.ca, cert=node.cert, key=node.key)
    assert isinstance(settings.cert, Path)
    settings.server_credentials()
    with pytest.raises(ValidationError, match="key"):
        TlsSettings(ca=node.ca, cert=node.cert, key=tmp_path / "missing.key")
    with pytest.raises(ValidationError):
        TlsSettings.model_validate({"ca": str(node.ca), "cert": str(node.cert)})
    parsed = TlsSettings.model_validate(
        {"ca": str(node.ca), "cert": str(node.cert), "key": str(node.key)}
    )
    assert parsed == settings
