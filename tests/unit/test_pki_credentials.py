"""``parse_credential`` and ``CredentialVerifier``: what a node accepts, and why it refuses."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from creditshare.errors import (
    ConfigurationError,
    CredentialRefusedError,
    InvalidInputError,
    PermissionDeniedError,
    RevocationStaleError,
)
from creditshare.pki import (
    CLOCK_SKEW,
    CREDENTIAL_EKU,
    MAX_CREDENTIALS,
    CaFiles,
    Credential,
    CredentialVerifier,
    init_ca,
    parse_credential,
)
from tests._pki import make_credential, make_crl, make_tls

NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=UTC)
ISSUED = NOW - timedelta(days=1)
USCC = "91350100M000100Y43"
MAX_AGE = timedelta(hours=36)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def yrd(tmp_path: Path) -> CaFiles:
    return init_ca("yrd", tmp_path / "yrd-ca", now=ISSUED - timedelta(days=10))


@pytest.fixture
def prd(tmp_path: Path) -> CaFiles:
    return init_ca("prd", tmp_path / "prd-ca", now=ISSUED - timedelta(days=1))


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def verifier(tmp_path: Path, yrd: CaFiles, clock: Clock) -> CredentialVerifier:
    made = CredentialVerifier.from_file(yrd.cert, max_revocation_age=MAX_AGE, clock=clock)
    assert made.update_revocations(make_crl(yrd.directory, tmp_path, now=NOW - timedelta(hours=1)))
    return made


def _cred(ca: CaFiles, tmp: Path, pid: str = "bank-a", role: str = "bank", **kw: object) -> bytes:
    kw.setdefault("now", ISSUED)
    _, pem = make_credential(ca.directory, tmp, pid, role, **kw)  # type: ignore[arg-type]
    return pem


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


# --- parse_credential ----------------------------------------------------------------------


def test_parse_reads_pem_and_der_without_an_issuer(tmp_path: Path, yrd: CaFiles) -> None:
    signing_key, pem = make_credential(
        yrd.directory, tmp_path, "ent-1", "enterprise", USCC, now=ISSUED
    )
    credential = parse_credential(pem)
    assert (credential.participant_id, credential.role, credential.uscc) == (
        "ent-1",
        "enterprise",
        USCC,
    )
    assert credential.verify_key == signing_key.verify_key
    assert credential.issuer_fingerprint == ""
    assert credential.serial == _serial(pem)
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert credential.der == der
    assert parse_credential(der) == credential


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not an X.509 certificate"),
        (b"\x30\x82garbage", "not an X.509 certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not an X.509"),
        (b"\x30" * 8193, "at most 8192"),
    ],
    ids=["empty", "garbage-der", "garbage-pem", "oversize"],
)
def test_parse_refuses_what_is_not_a_certificate(data: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_credential(data)


def test_parse_refuses_two_certificates_and_tls_ones(tmp_path: Path, yrd: CaFiles) -> None:
    pem = _cred(yrd, tmp_path)
    with pytest.raises(InvalidInputError, match="one certificate, not 2"):
        parse_credential(pem + pem)
    tls = make_tls(yrd.directory, tmp_path / "tls", "yrd-tax", "node", now=ISSUED)
    with pytest.raises(InvalidInputError, match=r"ECDSA.*not Ed25519"):
        parse_credential(tls.cert.read_bytes())


# --- hand-made certificates: what sign never issues, a node must still refuse -----------------


def _forge(
    ca: CaFiles,
    *,
    ca_flag: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    digital_signature_only: bool = True,
    uscc: str | None = None,
    role: str = "bank",
) -> bytes:
    """A certificate over an Ed25519 key signed by the real CA key, with one field wrong."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    names = [
        x509.NameAttribute(NameOID.COMMON_NAME, "bank-a"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "creditshare"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
    ]
    if uscc is not None:
        names.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, uscc))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(Ed25519PrivateKey.generate().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ISSUED)
        .not_valid_after(ISSUED + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=not digital_signature_only,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku or [CREDENTIAL_EKU]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ca_flag": True}, "is a CA certificate"),
        ({"eku": [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]}, "not creditshare request signing"),
        ({"eku": [CREDENTIAL_EKU, x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]}, "not creditshare"),
        ({"digital_signature_only": False}, "digitalSignature only"),
        ({"role": "enterprise"}, "must name its USCC"),
        ({"role": "enterprise", "uscc": "91350100M000100Y44"}, "not a valid USCC"),
        ({"uscc": USCC}, "carries no serialNumber"),
        ({"role": "coordinator"}, "not a credential role"),
    ],
    ids=[
        "ca-true",
        "tls-eku",
        "extra-eku",
        "key-cert-sign",
        "no-uscc",
        "bad-uscc",
        "uscc-bank",
        "coordinator",
    ],
)
def test_malformed_credentials_refused_even_when_the_ca_signed_them(
    yrd: CaFiles, verifier: CredentialVerifier, kwargs: dict[str, object], match: str
) -> None:
    forged = _forge(yrd, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=match):
        parse_credential(forged)
    with pytest.raises(CredentialRefusedError, match=match):
        verifier.verify([forged])


# --- CredentialVerifier: acceptance -------------------------------------------------------------


def test_verify_accepts_a_good_credential(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    signing_key, pem = make_credential(
        yrd.directory, tmp_path, "ent-1", "enterprise", USCC, now=ISSUED
    )
    credential = verifier.verify(
        [pem], participant_id="ent-1", role="enterprise", uscc=USCC.lower()
    )
    assert isinstance(credential, Credential)
    assert credential.verify_key == signing_key.verify_key
    expected = x509.load_pem_x509_certificate(yrd.cert.read_bytes()).fingerprint(hashes.SHA256())
    assert credential.issuer_fingerprint == expected.hex()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert verifier.verify([der]) == credential  # DER too, from the cache the second time


def test_verify_picks_the_trusted_one_among_several(
    tmp_path: Path, yrd: CaFiles, prd: CaFiles, verifier: CredentialVerifier
) -> None:
    foreign = _cred(prd, tmp_path / "prd")
    good = _cred(yrd, tmp_path / "yrd")
    other = _cred(yrd, tmp_path / "other", "bank-b")
    assert verifier.verify([foreign, good]).serial == _serial(good)
    # A party rolling over presents two; the one naming the claimed participant is used.
    assert verifier.verify([other, good], participant_id="bank-a").serial == _serial(good)


def test_a_bundle_of_cas_trusts_each(
    tmp_path: Path, yrd: CaFiles, prd: CaFiles, clock: Clock
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(yrd.cert.read_bytes() + prd.cert.read_bytes())
    verifier = CredentialVerifier.from_file(bundle, max_revocation_age=MAX_AGE, clock=clock)
    for ca in (yrd, prd):
        assert verifier.update_revocations(
            make_crl(ca.directory, tmp_path / ca.chain.value, now=NOW)
        )
        verifier.verify([_cred(ca, tmp_path / ca.chain.value)])
    assert len(verifier.revocation_lists()) == 2


def test_time_bounds_allow_the_clock_skew(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier, clock: Clock
) -> None:
    pem = _cred(yrd, tmp_path, now=NOW - timedelta(days=2), valid_days=1)
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    clock.now = not_after + CLOCK_SKEW
    verifier.verify([pem])
    clock.now = not_after + CLOCK_SKEW + timedelta(seconds=1)
    with pytest.raises(CredentialRefusedError, match="credential of 'bank-a' expired at"):
        verifier.verify([pem])


# --- CredentialVerifier: refusals ---------------------------------------------------------------


def test_refused_not_issued_by_a_trusted_ca(
    tmp_path: Path, prd: CaFiles, verifier: CredentialVerifier
) -> None:
    with pytest.raises(CredentialRefusedError, match="'bank-a' is not issued by a trusted CA"):
        verifier.verify([_cred(prd, tmp_path)])


def test_refused_a_ca_of_the_same_name_but_another_key(
    tmp_path: Path, verifier: CredentialVerifier
) -> None:
    twin = init_ca("yrd", tmp_path / "twin", now=ISSUED - timedelta(days=1))
    with pytest.raises(CredentialRefusedError, match="not issued by a trusted CA"):
        verifier.verify([_cred(twin, tmp_path)])


def test_refused_expired(tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier) -> None:
    pem = _cred(yrd, tmp_path, now=NOW - timedelta(days=3), valid_days=1)
    with pytest.raises(CredentialRefusedError, match="'bank-a' expired"):
        verifier.verify([pem])


def test_refused_not_yet_valid(tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier) -> None:
    pem = _cred(yrd, tmp_path, now=NOW + timedelta(days=2))
    with pytest.raises(CredentialRefusedError, match="'bank-a' is not valid yet"):
        verifier.verify([pem])


def test_refused_revoked(tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier) -> None:
    pem = _cred(yrd, tmp_path)
    verifier.verify([pem])
    crl = make_crl(yrd.directory, tmp_path, revoked=[_serial(pem)], now=NOW)
    assert verifier.update_revocations(crl)
    with pytest.raises(CredentialRefusedError, match="credential of 'bank-a' was revoked"):
        verifier.verify([pem])


def test_refused_tls_certificate_offered_as_credential(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    tls = make_tls(yrd.directory, tmp_path / "node", "yrd-tax", "node", now=ISSUED)
    with pytest.raises(CredentialRefusedError, match="a TLS certificate is not a credential"):
        verifier.verify([tls.cert.read_bytes()])


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"participant_id": "bank-b"}, "names participant 'bank-a', not 'bank-b'"),
        ({"role": "bureau"}, "names role bank, not bureau"),
    ],
)
def test_refused_when_names_do_not_match(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier, claims: dict[str, str], match: str
) -> None:
    with pytest.raises(CredentialRefusedError, match=match):
        verifier.verify([_cred(yrd, tmp_path)], **claims)


def test_refused_another_enterprises_uscc_without_quoting_it(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    pem = _cred(yrd, tmp_path, "ent-1", "enterprise", uscc=USCC)
    other = "91110000100000008J"  # a valid Beijing USCC
    with pytest.raises(CredentialRefusedError, match="another enterprise's USCC") as refused:
        verifier.verify([pem], uscc=other)
    assert USCC not in str(refused.value) and other not in str(refused.value)
    with pytest.raises(InvalidInputError, match="USCC"):
        verifier.verify([pem], uscc="not-a-uscc")


def test_refusals_are_permission_denied_and_never_quote_key_bytes(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    signing_key, pem = make_credential(yrd.directory, tmp_path, "bank-a", "bank", now=ISSUED)
    with pytest.raises(PermissionDeniedError) as refused:
        verifier.verify([pem], role="bureau")
    message = str(refused.value)
    assert signing_key.verify_key.to_text() not in message
    assert signing_key.verify_key.raw.hex() not in message


@pytest.mark.parametrize(
    ("certificates", "error", "match"),
    [
        ([], CredentialRefusedError, "no credential presented"),
        ([b"garbage"], InvalidInputError, "not an X.509 certificate"),
        ([b"\x30" * 9000], InvalidInputError, "at most 8192"),
        ([b"x"] * (MAX_CREDENTIALS + 1), InvalidInputError, "at most 8"),
        (b"a single bytes object", InvalidInputError, "sequence"),
    ],
    ids=["none", "garbage", "oversize", "too-many", "not-a-sequence"],
)
def test_refused_malformed_input(
    verifier: CredentialVerifier, certificates: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        verifier.verify(certificates)  # type: ignore[arg-type]


# --- revocation lists ---------------------------------------------------------------------------


def test_no_list_at_all_is_stale(tmp_path: Path, yrd: CaFiles, clock: Clock) -> None:
    fresh = CredentialVerifier(
        [x509.load_pem_x509_certificate(yrd.cert.read_bytes())],
        max_revocation_age=MAX_AGE,
        clock=clock,
    )
    assert fresh.revocation_lists() == []
    with pytest.raises(RevocationStaleError, match="revocation data is too old: it holds no"):
        fresh.verify([_cred(yrd, tmp_path)])


def test_a_list_older_than_the_bound_is_stale(tmp_path: Path, yrd: CaFiles, clock: Clock) -> None:
    verifier = CredentialVerifier.from_file(yrd.cert, max_revocation_age=MAX_AGE, clock=clock)
    verifier.update_revocations(
        make_crl(yrd.directory, tmp_path, now=NOW - MAX_AGE, valid_hours=24 * 7)
    )
    pem = _cred(yrd, tmp_path)
    verifier.verify([pem])  # exactly at the bound: still fresh
    clock.now = NOW + timedelta(seconds=1)
    with pytest.raises(RevocationStaleError, match=r"too old.*number 1"):
        verifier.verify([pem])


def test_a_list_past_its_next_update_is_stale(tmp_path: Path, yrd: CaFiles, clock: Clock) -> None:
    verifier = CredentialVerifier.from_file(
        yrd.cert, max_revocation_age=timedelta(days=30), clock=clock
    )
    verifier.update_revocations(
        make_crl(yrd.directory, tmp_path, now=NOW - timedelta(hours=2), valid_hours=1)
    )
    with pytest.raises(RevocationStaleError, match="due for renewal"):
        verifier.verify([_cred(yrd, tmp_path)])


def test_a_list_signed_by_another_ca_is_refused(
    tmp_path: Path, prd: CaFiles, verifier: CredentialVerifier
) -> None:
    before = verifier.revocation_lists()
    with pytest.raises(InvalidInputError, match="not signed by a trusted chain CA"):
        verifier.update_revocations(make_crl(prd.directory, tmp_path, now=NOW))
    assert verifier.revocation_lists() == before


def test_a_list_of_a_same_named_ca_with_another_key_is_refused(
    tmp_path: Path, verifier: CredentialVerifier
) -> None:
    twin = init_ca("yrd", tmp_path / "twin", now=ISSUED)
    with pytest.raises(InvalidInputError, match="not signed by a trusted chain CA"):
        verifier.update_revocations(make_crl(twin.directory, tmp_path, now=NOW))


def test_rollback_to_a_lower_number_is_ignored(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    pem = _cred(yrd, tmp_path)
    old = make_crl(yrd.directory, tmp_path, now=NOW)  # number 2: nothing revoked
    newer = make_crl(yrd.directory, tmp_path, revoked=[_serial(pem)], now=NOW)  # number 3
    assert verifier.update_revocations(newer)
    assert not verifier.update_revocations(old)  # replayed older list: kept the newer one
    assert not verifier.update_revocations(newer)  # the same one again: no change
    [held] = verifier.revocation_lists()
    assert held.number == 3 and _serial(pem) in held.revoked_serials
    with pytest.raises(CredentialRefusedError, match="revoked"):
        verifier.verify([pem])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"garbage", "not an X.509 revocation list"),
        (b"0" * (1024 * 1024 + 1), "at most"),
    ],
)
def test_malformed_lists_refused(verifier: CredentialVerifier, data: bytes, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        verifier.update_revocations(data)


def test_verifier_refuses_a_leaf_as_trust_anchor(
    tmp_path: Path, yrd: CaFiles, clock: Clock
) -> None:
    tls = make_tls(yrd.directory, tmp_path / "node", "yrd-tax", "node", now=ISSUED)
    with pytest.raises(ConfigurationError, match="chain CA certificate"):
        CredentialVerifier.from_file(tls.cert, max_revocation_age=MAX_AGE, clock=clock)
    with pytest.raises(ConfigurationError, match="at least one"):
        CredentialVerifier([], max_revocation_age=MAX_AGE, clock=clock)


def test_concurrent_verification_agrees(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier
) -> None:
    pems = [_cred(yrd, tmp_path / str(i), f"bank-{i}") for i in range(4)]
    results: list[str] = []
    errors: list[BaseException] = []

    def work(pem: bytes) -> None:
        try:
            for _ in range(20):
                results.append(verifier.verify([pem]).participant_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in pems for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(set(results)) == [f"bank-{i}" for i in range(4)]
    assert len(results) == 4 * 2 * 20


def test_parse_and_signature_are_cached_but_time_is_not(
    tmp_path: Path,
    yrd: CaFiles,
    verifier: CredentialVerifier,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pem = _cred(yrd, tmp_path, valid_days=2)
    verifier.verify([pem])

    def no_second_check(certificate: x509.Certificate) -> str | None:
        raise AssertionError("the issuer's signature was checked again")

    monkeypatch.setattr(verifier, "_check_issuer", no_second_check)
    verifier.verify([pem])
    clock.now = NOW + timedelta(days=3)
    with pytest.raises(CredentialRefusedError, match="expired"):
        verifier.verify([pem])


def test_the_cache_is_bounded(
    tmp_path: Path, yrd: CaFiles, verifier: CredentialVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("creditshare.pki._verifier._CACHE_SIZE", 2)
    for i in range(4):
        verifier.verify([_cred(yrd, tmp_path / str(i), f"bank-{i}")])
    assert len(verifier._cache) == 2


def test_the_edges_map_both_errors_once() -> None:
    """A refused credential is the caller's fault (403 / PERMISSION_DENIED); stale revocation
    data is the service's (503 / FAILED_PRECONDITION): retry once a fresh list arrived."""
    import grpc

    from creditshare.coordinator._problems import status_of
    from creditshare.node._service import status_for

    assert status_for(CredentialRefusedError("x")) is grpc.StatusCode.PERMISSION_DENIED
    assert status_for(RevocationStaleError("x")) is grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(CredentialRefusedError("x")) == 403
    assert status_of(RevocationStaleError("x")) == 503
