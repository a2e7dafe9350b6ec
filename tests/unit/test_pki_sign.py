"""``sign``: what the chain CA certifies, and every request it refuses (with nothing written)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from creditshare.errors import InvalidInputError
from creditshare.pki import (
    CLOCK_SKEW,
    CREDENTIAL_EKU,
    CaFiles,
    init_ca,
    parse_credential,
    request,
    sign,
)

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)
USCC = "91350100M000100Y43"


@pytest.fixture
def ca(tmp_path: Path) -> CaFiles:
    return init_ca("yrd", tmp_path / "ca", now=NOW - timedelta(days=1))


def _name(
    cn: str = "bank-a", ou: str | None = "bank", *extra: x509.NameAttribute[str]
) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "creditshare"),
    ]
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name([*attributes, *extra])


def _csr(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *extensions: x509.ExtensionType,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def _ed() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- what is certified ------------------------------------------------------------------------


def test_credential_contents(tmp_path: Path, ca: CaFiles) -> None:
    files = request(tmp_path / "ent", "ent-1", "enterprise", uscc=USCC)
    assert files.signing_csr is not None
    out = tmp_path / "ent" / "credential.crt"
    signed = sign(ca.directory, files.signing_csr.read_bytes(), out, now=NOW)
    assert (signed.kind, signed.participant_id, signed.role, signed.uscc) == (
        "credential",
        "ent-1",
        "enterprise",
        USCC,
    )
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.serial_number == signed.serial
    assert 0 < signed.serial < 2**128
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == USCC
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [CREDENTIAL_EKU]
    assert CREDENTIAL_EKU.dotted_string.startswith("2.25.")
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert.read_bytes()))
    assert signed.ca.read_bytes() == ca.cert.read_bytes()
    # Recorded at the CA under its serial, for revoke.
    assert (ca.directory / "issued" / f"{signed.serial:x}.pem").read_bytes() == out.read_bytes()
    credential = parse_credential(out.read_bytes())
    assert (credential.participant_id, credential.role, credential.uscc) == (
        "ent-1",
        "enterprise",
        USCC,
    )


def test_tls_certificates_keep_their_profile(tmp_path: Path, ca: CaFiles) -> None:
    files = request(tmp_path / "node", "yrd-tax", "node", hosts=["yrd-tax", "127.0.0.1"])
    assert files.tls_csr is not None
    signed = sign(ca.directory, files.tls_csr.read_bytes(), tmp_path / "node" / "tls.crt", now=NOW)
    assert (signed.kind, signed.role, signed.hosts) == ("tls", "node", ("yrd-tax", "127.0.0.1"))
    cert = x509.load_pem_x509_certificate(signed.cert.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(InvalidInputError, match="not Ed25519"):
        parse_credential(signed.cert.read_bytes())


def test_der_csr_accepted_and_serials_differ(tmp_path: Path, ca: CaFiles) -> None:
    pem = _csr(_ed(), _name())
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    a = sign(ca.directory, pem, tmp_path / "a.crt", now=NOW)
    b = sign(ca.directory, der, tmp_path / "b.crt", now=NOW)
    assert a.serial != b.serial


def test_valid_days_and_the_leaf_bound(tmp_path: Path, ca: CaFiles) -> None:
    signed = sign(ca.directory, _csr(_ed(), _name()), tmp_path / "a.crt", valid_days=825, now=NOW)
    assert signed.not_after == NOW + timedelta(days=825)
    for days in (0, 826, -1):
        with pytest.raises(InvalidInputError, match="valid_days"):
            sign(ca.directory, _csr(_ed(), _name()), tmp_path / "b.crt", valid_days=days, now=NOW)


# --- refusals: one vector per reason ---------------------------------------------------------


def _altered() -> bytes:
    """A CSR whose subject was changed after it was signed (self-signature breaks)."""
    der = bytearray(
        x509.load_pem_x509_csr(_csr(_ed(), _name("bank-a"))).public_bytes(
            serialization.Encoding.DER
        )
    )
    i = der.index(b"bank-a")
    der[i : i + 6] = b"bank-b"
    return bytes(der)


REFUSED: dict[str, tuple[object, str]] = {
    "garbage": (lambda: b"not a csr at all", "not a certificate signing request"),
    "oversize": (lambda: b"-----BEGIN " + b"A" * 9000, "at most 8192"),
    "altered": (_altered, "self-signature does not verify"),
    "rsa-key": (
        lambda: _csr(rsa.generate_private_key(65537, 2048), _name("yrd-tax", "node")),
        "neither Ed25519",
    ),
    "p384-key": (
        lambda: _csr(ec.generate_private_key(ec.SECP384R1()), _name("yrd-tax", "node")),
        "neither Ed25519",
    ),
    "ed25519-as-coordinator": (
        lambda: _csr(_ed(), _name("coordinator-yrd", "coordinator")),
        "'coordinator' is not a credential role",
    ),
    "ecdsa-as-bank": (
        lambda: _csr(_ec(), _name(), x509.SubjectAlternativeName([x509.DNSName("a")])),
        "'bank' is not a TLS role",
    ),
    "unknown-role": (lambda: _csr(_ed(), _name(ou="admin")), "not a credential role"),
    "no-role": (lambda: _csr(_ed(), _name(ou=None)), "no OU"),
    "bad-cn": (lambda: _csr(_ed(), _name(cn="Bank A")), "not a participant id"),
    "wrong-o": (
        lambda: _csr(
            _ed(),
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "bank-a"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evil"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "bank"),
                ]
            ),
        ),
        "subject O is 'evil'",
    ),
    "two-cns": (
        lambda: _csr(_ed(), _name("bank-a", "bank", x509.NameAttribute(NameOID.COMMON_NAME, "b"))),
        "2 CN attributes",
    ),
    "extra-attribute": (
        lambda: _csr(
            _ed(), _name("bank-a", "bank", x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"))
        ),
        "is not accepted",
    ),
    "bad-uscc": (
        lambda: _csr(
            _ed(),
            _name(
                "ent-1", "enterprise", x509.NameAttribute(NameOID.SERIAL_NUMBER, USCC[:-1] + "4")
            ),
        ),
        "USCC is invalid",
    ),
    "enterprise-without-uscc": (
        lambda: _csr(_ed(), _name("ent-1", "enterprise")),
        "needs the enterprise's USCC",
    ),
    "uscc-on-a-bank": (
        lambda: _csr(
            _ed(), _name("bank-a", "bank", x509.NameAttribute(NameOID.SERIAL_NUMBER, USCC))
        ),
        "carries no USCC",
    ),
    "uscc-on-tls": (
        lambda: _csr(
            _ec(),
            _name("yrd-tax", "node", x509.NameAttribute(NameOID.SERIAL_NUMBER, USCC)),
            x509.SubjectAlternativeName([x509.DNSName("yrd-tax")]),
        ),
        "TLS request carries no serialNumber",
    ),
    "asks-for-ca": (
        lambda: _csr(_ed(), _name(), x509.BasicConstraints(ca=True, path_length=None)),
        "asks for a CA certificate",
    ),
    "asks-for-tls-eku": (
        lambda: _csr(_ed(), _name(), x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])),
        "which a credential request may not carry",
    ),
    "san-on-credential": (
        lambda: _csr(_ed(), _name(), x509.SubjectAlternativeName([x509.DNSName("bank.example")])),
        "which a credential request may not carry",
    ),
    "tls-without-hosts": (lambda: _csr(_ec(), _name("yrd-tax", "node")), "must name its hosts"),
    "tls-uri-host": (
        lambda: _csr(
            _ec(),
            _name("yrd-tax", "node"),
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("https://x")]),
        ),
        "only DNS names and IP addresses",
    ),
    "tls-bad-host": (
        lambda: _csr(
            _ec(),
            _name("yrd-tax", "node"),
            x509.SubjectAlternativeName([x509.DNSName("-bad.example")]),
        ),
        "neither an IP address nor a valid DNS name",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sign_refuses(tmp_path: Path, ca: CaFiles, case: str) -> None:
    make, match = REFUSED[case]
    csr = make()  # type: ignore[operator]
    before = _snapshot(tmp_path)
    with pytest.raises(InvalidInputError, match=match):
        sign(ca.directory, csr, tmp_path / "out" / "party.crt", now=NOW)
    assert _snapshot(tmp_path) == before  # no certificate, no record at the CA
    assert not (tmp_path / "out").exists()


def test_sign_refuses_to_write_over_the_ca_copy(tmp_path: Path, ca: CaFiles) -> None:
    from creditshare.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="CA certificate copy"):
        sign(ca.directory, _csr(_ed(), _name()), tmp_path / "out" / "ca.crt", now=NOW)
