"""The monitoring contract every party shares: signal choices, fixed-size batches, HPKE
alert keys and the bank's signed subscription (creditshare.monitoring, crypto, signed)."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, date, datetime

import pytest

from creditshare._canonical import canonical_json
from creditshare.crypto import (
    SEAL_OVERHEAD,
    AlertPrivateKey,
    AlertPublicKey,
    SealedOpenError,
    SigningKey,
)
from creditshare.errors import InvalidInputError, InvalidKeyError, InvalidSignatureError
from creditshare.monitoring import (
    BATCH_BYTES,
    BATCH_EVENTS,
    SIGNAL_RULES,
    AlertBatch,
    AlertEvent,
    Signal,
    SignalChoice,
    batch_info,
    choices_from_json,
    cycle_digest,
    event_id,
    node_digest,
)
from creditshare.signed import SignedSubscription, subscription_document

SUB = "ab" * 16
NODE = "yrd-court"


def _event(seq: int = 1, signal: Signal = Signal.COURT_JUDGMENT, **kw: str) -> AlertEvent:
    return AlertEvent(
        id=event_id(NODE, SUB, seq + 10, signal),
        seq=seq,
        signal=signal,
        severity=SIGNAL_RULES[signal].severity,
        observed_at=date(2026, 11, 30),
        snapshot=seq + 10,
        indicator=kw.get("indicator", "judgments_band"),
        before=kw.get("before", "none"),
        after=kw.get("after", "1"),
    )


# ----------------------------------------------------------------------- signal choices


def test_signal_choice_fills_the_default_threshold_and_keeps_a_valid_one() -> None:
    assert SignalChoice.of("headcount_drop") == SignalChoice(Signal.HEADCOUNT_DROP, 20)
    assert SignalChoice.of("court_judgment", 3).threshold == 3
    assert SignalChoice.of("dishonest_debtor").threshold is None
    assert SignalChoice.of("tax_downgrade", 16).threshold == 16


@pytest.mark.parametrize(
    ("name", "threshold", "message"),
    [
        ("court_judgement", None, "unknown signal type 'court_judgement'; known types: court_"),
        ("court_judgment", 0, "court_judgment: threshold 0 is outside 1..1000"),
        ("headcount_drop", 101, "headcount_drop: threshold 101 is outside 1..100"),
        ("dishonest_debtor", 1, "signal dishonest_debtor takes no threshold"),
        ("tax_arrears", True, "tax_arrears: threshold must be an integer"),
        ("tax_arrears", 1.5, "tax_arrears: threshold must be an integer"),
    ],
)
def test_signal_choice_refuses_what_it_cannot_mean(
    name: str, threshold: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message.replace(".", r"\.")):
        SignalChoice.of(name, threshold)  # type: ignore[arg-type]


def test_choices_from_json_sorts_and_refuses_duplicates_empty_and_extra_fields() -> None:
    got = choices_from_json(
        [{"type": "utility_arrears"}, {"type": "court_judgment", "threshold": 2}]
    )
    assert [c.to_json() for c in got] == [
        {"type": "court_judgment", "threshold": 2},
        {"type": "utility_arrears", "threshold": 1},
    ]
    for bad, message in [
        ([], f"signals must list 1 to {len(Signal)} signal types"),
        ("court_judgment", f"signals must list 1 to {len(Signal)}"),
        ([{"type": "court_judgment"}, {"type": "court_judgment"}], "more than once"),
        ([{"type": "court_judgment", "why": 1}], "each of signals is {type, threshold}"),
        ([{"threshold": 1}], "each of signals is"),
        ([{"type": 7}], "type must be a string"),
    ]:
        with pytest.raises(InvalidInputError, match=message.replace("{", r"\{")):
            choices_from_json(bad)


# ----------------------------------------------------------------------- batches


def test_batch_plaintext_is_exactly_batch_bytes_whatever_it_holds_and_round_trips() -> None:
    empty = AlertBatch(SUB, NODE, 7, ())
    full = AlertBatch(
        SUB,
        NODE,
        7,
        tuple(_event(i, before="x" * 64, after="y" * 64, indicator="z" * 64) for i in (1, 2, 3, 4)),
        more=True,
    )
    assert len(full.events) == BATCH_EVENTS
    for batch in (empty, full):
        plain = batch.to_plaintext()
        assert len(plain) == BATCH_BYTES
        assert AlertBatch.from_plaintext(plain) == batch
    assert AlertBatch.from_plaintext(full.to_plaintext()).more is True


def test_a_batch_holds_at_most_batch_events() -> None:
    with pytest.raises(InvalidInputError, match="at most 4 events"):
        AlertBatch(SUB, NODE, 1, tuple(_event(i) for i in range(1, 6))).to_plaintext()


def test_malformed_plaintext_is_refused() -> None:
    plain = AlertBatch(SUB, NODE, 3, (_event(),)).to_plaintext()
    (length,) = struct.unpack(">I", plain[:4])
    with pytest.raises(InvalidInputError, match="plaintext is 4096 bytes"):
        AlertBatch.from_plaintext(plain[:-1])
    # A non-zero byte in the padding: refused, not ignored.
    dirty = plain[: 4 + length] + b"\x01" + plain[5 + length :]
    with pytest.raises(InvalidInputError, match="padding is malformed"):
        AlertBatch.from_plaintext(dirty)
    # A length that points beyond the buffer.
    with pytest.raises(InvalidInputError, match="padding is malformed"):
        AlertBatch.from_plaintext(struct.pack(">I", BATCH_BYTES) + plain[4:])
    # A length that cuts the JSON short.
    with pytest.raises(InvalidInputError, match="not canonical JSON"):
        AlertBatch.from_plaintext(
            struct.pack(">I", length - 1) + plain[4 : 3 + length] + bytes(BATCH_BYTES - 3 - length)
        )


def _plaintext(doc: object) -> bytes:
    body = canonical_json(doc)
    return struct.pack(">I", len(body)) + body + bytes(BATCH_BYTES - 4 - len(body))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "not a version 1 batch"),
        ({"subscription": "AB" * 16}, "subscription id is malformed"),
        ({"node": "Yrd Court"}, "node id is malformed"),
        ({"cycle": 0}, "cycle must be a positive integer"),
        ({"events": [{"id": "x"}]}, "alert event id must be 32 hex digits"),
        ({"events": [{}] * 5}, "at most 4"),
    ],
)
def test_malformed_batch_documents_are_refused(change: dict[str, object], message: str) -> None:
    doc = {"v": 1, "subscription": SUB, "node": NODE, "cycle": 1, "events": [], "more": False}
    with pytest.raises(InvalidInputError, match=message):
        AlertBatch.from_plaintext(_plaintext(doc | change))


def test_event_ids_are_stable_and_distinct_per_node_subscription_snapshot_and_signal() -> None:
    one = event_id(NODE, SUB, 5, Signal.COURT_JUDGMENT)
    assert one == event_id(NODE, SUB, 5, Signal.COURT_JUDGMENT)
    assert len(one) == 32 and int(one, 16) >= 0
    others = {
        event_id("prd-court", SUB, 5, Signal.COURT_JUDGMENT),
        event_id(NODE, "cd" * 16, 5, Signal.COURT_JUDGMENT),
        event_id(NODE, SUB, 6, Signal.COURT_JUDGMENT),
        event_id(NODE, SUB, 5, Signal.DISHONEST_DEBTOR),
    }
    assert one not in others and len(others) == 4


def test_digests_do_not_depend_on_order_but_on_every_pair() -> None:
    a = {"a" * 32: "1" * 64, "b" * 32: "2" * 64}
    b = dict(reversed(list(a.items())))
    assert node_digest(a) == node_digest(b)
    assert node_digest(a) != node_digest({"a" * 32: "1" * 64, "b" * 32: "3" * 64})
    nodes = {"yrd-tax": node_digest(a), "yrd-court": node_digest({})}
    assert cycle_digest(nodes) == cycle_digest(dict(reversed(list(nodes.items()))))
    assert cycle_digest(nodes) != cycle_digest({"yrd-tax": node_digest(a)})
    # A node's and a cycle's digest are domain-separated.
    assert node_digest({}) != cycle_digest({})


# ----------------------------------------------------------------------- alert keys


def test_sealed_batch_opens_only_with_its_key_and_its_info() -> None:
    key = AlertPrivateKey.generate()
    plain = AlertBatch(SUB, NODE, 9, (_event(),)).to_plaintext()
    info = batch_info(SUB, NODE, 9)
    sealed = key.public_key().seal(plain, info)
    assert len(sealed) == BATCH_BYTES + SEAL_OVERHEAD
    assert key.open(sealed, info) == plain
    # Sealing is randomised: the same batch twice looks different.
    assert key.public_key().seal(plain, info) != sealed
    for wrong in (
        batch_info(SUB, NODE, 10),
        batch_info("cd" * 16, NODE, 9),
        batch_info(SUB, "x", 9),
    ):
        with pytest.raises(SealedOpenError, match="does not open"):
            key.open(sealed, wrong)
    with pytest.raises(SealedOpenError, match="does not open"):
        AlertPrivateKey.generate().open(sealed, info)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedOpenError, match="does not open"):
        key.open(tampered, info)
    with pytest.raises(SealedOpenError, match="shorter than"):
        key.open(sealed[:40], info)


def test_alert_key_bytes_and_text_round_trip_and_bad_keys_are_refused() -> None:
    key = AlertPrivateKey.generate()
    again = AlertPrivateKey.from_bytes(key.to_bytes())
    assert again.public_key() == key.public_key()
    public = key.public_key()
    assert AlertPublicKey.from_text(public.to_text()) == public
    assert len(public.raw) == 32
    assert "AlertPrivateKey(public=" in repr(key)
    assert base64.b64encode(key.to_bytes()).decode() not in repr(key)
    for raw in (b"", bytes(31), bytes(33)):
        with pytest.raises(InvalidKeyError, match="exactly 32 bytes"):
            AlertPublicKey(raw)
        with pytest.raises(InvalidKeyError, match="exactly 32 bytes"):
            AlertPrivateKey.from_bytes(raw)
    with pytest.raises(InvalidKeyError, match="all-zero"):
        AlertPublicKey(bytes(32))
    with pytest.raises(InvalidKeyError, match="not valid base64"):
        AlertPublicKey.from_text("not base64!")
    with pytest.raises(InvalidKeyError, match="exactly 32 bytes"):
        AlertPublicKey.from_text(base64.b64encode(bytes(16)).decode())


#: X25519 points of small order (RFC 7748 §7; the curve's low-order u-coordinates):
#: every shared secret with them is all zeros, so HPKE cannot seal to them.
_SMALL_ORDER = (
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
)


@pytest.mark.parametrize("raw", _SMALL_ORDER, ids=["one", "order8", "order8b", "p-1"])
def test_small_order_alert_keys_are_refused_where_they_enter(raw: bytes) -> None:
    """Else a bank could sign a subscription to one and make every node that watches it
    fail its whole Monitor answer (sealing raises), every cycle, for every bank."""
    with pytest.raises(InvalidKeyError, match="small-order"):
        AlertPublicKey(raw)
    with pytest.raises(InvalidKeyError, match="small-order"):
        AlertPublicKey.from_text(base64.b64encode(raw).decode())
    doc = _document() | {"alert_key": base64.b64encode(raw).decode()}
    with pytest.raises(InvalidInputError, match="small-order"):
        SignedSubscription.sign(doc, SigningKey.generate())


def test_fingerprint_is_stable_short_and_per_key() -> None:
    key = AlertPrivateKey.generate().public_key()
    assert key.fingerprint() == AlertPublicKey(key.raw).fingerprint()
    assert len(key.fingerprint()) == 32 and int(key.fingerprint(), 16) >= 0
    assert key.fingerprint() != AlertPrivateKey.generate().public_key().fingerprint()


# ----------------------------------------------------------------------- signed subscription


def _document(alert_key: AlertPublicKey | None = None, **change: object) -> dict[str, object]:
    doc = subscription_document(
        subscription_id=SUB,
        requester="demo-bank",
        uscc="91310115MA3BJ1XGXC",
        consent_id="cd" * 16,
        chains=["yrd", "bth", "yrd"],
        signals=[SignalChoice.of("tax_arrears"), SignalChoice.of("court_judgment", 2)],
        alert_key=alert_key or AlertPrivateKey.generate().public_key(),
        time=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    )
    return doc | change


def test_subscription_document_is_canonical_and_signs_and_verifies() -> None:
    alert = AlertPrivateKey.generate().public_key()
    doc = _document(alert)
    assert doc["chains"] == ["bth", "yrd"]
    assert doc["signals"] == [
        {"type": "court_judgment", "threshold": 2},
        {"type": "tax_arrears", "threshold": 1},
    ]
    assert doc["purpose"] == "post_loan_monitoring"
    bank = SigningKey.generate()
    signed = SignedSubscription.sign(doc, bank)
    signed.verify(bank.verify_key)
    again = SignedSubscription.from_json(signed.to_json())
    again.verify(bank.verify_key)
    assert again.digest() == signed.digest() and len(signed.digest()) == 64
    assert again.subscription_id == SUB and again.uscc == "91310115MA3BJ1XGXC"
    assert again.consent_id == "cd" * 16 and again.chains == ("bth", "yrd")
    assert again.alert_key == alert
    assert [c.signal for c in again.signals] == [Signal.COURT_JUDGMENT, Signal.TAX_ARREARS]
    with pytest.raises(InvalidSignatureError):
        signed.verify(SigningKey.generate().verify_key)


@pytest.mark.parametrize(
    "change",
    [
        {"uscc": "91310115MA3BJ1XGXD"},
        {"chains": ["yrd"]},
        {"signals": [{"type": "court_judgment", "threshold": 1}]},
        {"alert_key": AlertPrivateKey.generate().public_key().to_text()},
    ],
)
def test_a_tampered_subscription_does_not_verify(change: dict[str, object]) -> None:
    bank = SigningKey.generate()
    wire = SignedSubscription.sign(_document(), bank).to_json()
    wire["document"] = wire["document"] | change
    forged = SignedSubscription.from_json(wire)
    with pytest.raises(InvalidSignatureError):
        forged.verify(bank.verify_key)
    assert forged.digest() != SignedSubscription.sign(_document(), bank).digest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "signals": [
                    {"type": "tax_arrears", "threshold": 1},
                    {"type": "court_judgment", "threshold": 2},
                ]
            },
            "must be sorted by type, thresholds filled",
        ),
        ({"signals": [{"type": "court_judgment"}]}, "must be sorted by type, thresholds filled"),
        ({"signals": [{"type": "court_judgment", "threshold": 0}]}, "outside 1..1000"),
        ({"signals": [{"type": "insolvency"}]}, "unknown signal type 'insolvency'"),
        ({"alert_key": base64.b64encode(bytes(32)).decode()}, "all-zero"),
        ({"alert_key": "%%%"}, "not valid base64"),
        ({"alert_key": 7}, "'alert_key' must be base64 text"),
        ({"purpose": "pre_loan_review"}, "purpose must be post_loan_monitoring"),
        ({"chains": ["yrd", "bth"]}, "sorted list"),
        ({"subscription_id": "XYZ"}, "'subscription_id' must be 32 lowercase hex digits"),
        ({"extra": 1}, "unexpected \\['extra'\\]"),
    ],
)
def test_malformed_subscriptions_are_refused_before_any_signature(
    change: dict[str, object], message: str
) -> None:
    doc = _document() | change
    with pytest.raises(InvalidInputError, match=message):
        SignedSubscription.sign(doc, SigningKey.generate())
    wire = {"document": doc, "signature": base64.b64encode(bytes(64)).decode()}
    with pytest.raises(InvalidInputError, match=message):
        SignedSubscription.from_json(wire)
