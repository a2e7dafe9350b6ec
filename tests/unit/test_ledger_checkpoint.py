"""C2SP checkpoints, signed notes and cosignatures: the specs' own examples as vectors,
round trips, and every refusal (bad key id, bad signature, wrong body, oversize)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.ledger import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Cosignature,
    LogSigner,
    SignedTreeHead,
    WitnessKey,
    checkpoint_body,
    checkpoint_note,
    cosign,
    cosignature_message,
    leaf_hash,
    log_origin,
    note_key_id,
    parse_checkpoint,
    parse_checkpoint_body,
    parse_note,
    verify_cosignature,
)

# --- the specs' examples -----------------------------------------------------------------

#: c2sp.org/signed-note, "Verifier keys / Example" (an Ed25519 note key, type 0x01).
NOTE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
NOTE = (
    "This is an example message.\n"
    "\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXs"
    "YjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
#: c2sp.org/tlog-cosignature, the example checkpoint with a cosignature, and the
#: message example whose time line is that cosignature's timestamp.
COSIGNED_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def test_signed_note_example_parses_and_its_key_id_is_the_specs() -> None:
    name, hex_id, encoded = NOTE_VKEY.split("+")
    raw = base64.b64decode(encoded)
    assert note_key_id(name, raw[:1], raw[1:]).hex() == hex_id == "530d903a"
    note = parse_note(NOTE)
    assert note.text == "This is an example message.\n"
    (sig,) = note.signatures
    assert (sig.name, sig.key_id.hex()) == ("example.com/foo", "530d903a")
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig.payload, note.text.encode())
    assert note.format() == NOTE


def test_cosignature_example_parses_with_the_specs_timestamp() -> None:
    note = parse_note(COSIGNED_CHECKPOINT)
    checkpoint = parse_checkpoint_body(note.text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    witness_line = note.signatures[1]
    cosignature = Cosignature.from_note_signature(witness_line)
    assert cosignature.witness == "witness.example.com/w1"
    assert cosignature.key_id.hex() == "8d66cf3f"
    assert cosignature.timestamp == 1679315147
    assert cosignature_message(note.text.encode(), cosignature.timestamp) == SPEC_MESSAGE
    assert cosignature.line() == "\u2014 " + COSIGNED_CHECKPOINT.split("\u2014 ")[2]


# --- our own vectors (fixed keys: Ed25519 is deterministic) ------------------------------

WITNESS_SEED = bytes(range(32))
LOG_SEED = bytes(range(32, 64))


def _witness() -> tuple[Ed25519PrivateKey, WitnessKey]:
    private = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    return private, WitnessKey.from_public_key("yrd-tax", private.public_key())


def _head(size: int = 7, timestamp_ms: int = 1_700_000_000_123) -> tuple[LogSigner, SignedTreeHead]:
    signer = LogSigner.from_private_bytes(LOG_SEED)
    return signer, signer.sign_head(size, leaf_hash(b"root"), timestamp_ms)


def test_vkey_round_trip_and_key_id_rule() -> None:
    _, key = _witness()
    text = key.vkey()
    name, hex_id, encoded = text.split("+", 2)
    assert name == "yrd-tax"
    raw = base64.b64decode(encoded)
    assert raw[:1] == b"\x04" and raw[1:] == key.public_key
    assert hex_id == note_key_id("yrd-tax", b"\x04", key.public_key).hex()
    assert WitnessKey.parse(text) == key
    assert WitnessKey.parse(text + "\n") == key


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yrd-tax", "three parts"),
        ("yrd tax+00000000+AA==", "must not contain spaces"),
        ("yrd-tax+XYZ+AA==", "8 lowercase hex"),
        ("yrd-tax+00000000+!!!", "not valid base64"),
        ("x" * 500, "short text"),
    ],
)
def test_bad_vkeys_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        WitnessKey.parse(text)


def test_vkey_with_a_wrong_key_id_or_type_is_refused() -> None:
    _, key = _witness()
    name, hex_id, encoded = key.vkey().split("+", 2)
    wrong_id = f"{int(hex_id, 16) ^ 1:08x}"
    with pytest.raises(InvalidInputError, match="does not match its name and key"):
        WitnessKey.parse(f"{name}+{wrong_id}+{encoded}")
    # Same key under type 0x01 (a note key, not a cosigner): refused.
    note_type = base64.b64encode(b"\x01" + key.public_key).decode()
    with pytest.raises(InvalidInputError, match="type 0x04"):
        WitnessKey.parse(f"{name}+{hex_id}+{note_type}")


def test_checkpoint_body_is_origin_size_root() -> None:
    signer, head = _head()
    origin = log_origin(signer.public_key)
    assert origin == "creditshare/ledger/" + signer.key_id
    body = checkpoint_body(head, origin)
    root = base64.b64encode(leaf_hash(b"root")).decode()
    assert body == f"{origin}\n7\n{root}\n".encode()
    parsed = parse_checkpoint_body(body.decode())
    assert (parsed.origin, parsed.size, parsed.root) == (origin, 7, leaf_hash(b"root"))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("o\n7\n", "three lines"),
        ("o\n7\nAAAA\next\n", "three lines"),
        ("o\n07\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeroes"),
        ("o\n-7\n" + base64.b64encode(bytes(32)).decode() + "\n", "not a decimal"),
        ("o\n7\n" + base64.b64encode(bytes(31)).decode() + "\n", "32 bytes"),
        ("o o\n7\n" + base64.b64encode(bytes(32)).decode() + "\n", "spaces"),
    ],
)
def test_bad_checkpoint_bodies_are_refused(body: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        parse_checkpoint_body(body)


def test_cosign_and_verify_vector() -> None:
    private, key = _witness()
    signer, head = _head()
    body = checkpoint_body(head, log_origin(signer.public_key))
    cosignature = cosign(private, "yrd-tax", body, 1_700_000_000)
    assert cosignature.key_id == key.key_id and cosignature.timestamp == 1_700_000_000
    # The signed message is the spec's: header, time line, body.
    private.public_key().verify(cosignature.signature, b"cosignature/v1\ntime 1700000000\n" + body)
    verify_cosignature(key, cosignature, body)
    line = cosignature.line()
    payload = base64.b64decode(line.split(" ")[2])
    assert payload[:4] == key.key_id
    assert int.from_bytes(payload[4:12], "big") == 1_700_000_000
    assert Cosignature.parse_line(line) == cosignature
    assert Cosignature.from_dict(cosignature.to_dict()) == cosignature


def test_cosignature_over_another_body_or_time_does_not_verify() -> None:
    private, key = _witness()
    signer, head = _head()
    _, other = _head(size=8)
    origin = log_origin(signer.public_key)
    body = checkpoint_body(head, origin)
    cosignature = cosign(private, "yrd-tax", body, 1_700_000_000)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_cosignature(key, cosignature, checkpoint_body(other, origin))
    shifted = Cosignature(key.name, key.key_id, 1_700_000_001, cosignature.signature)
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_cosignature(key, shifted, body)
    forged = Cosignature(key.name, key.key_id, 1_700_000_000, bytes(64))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_cosignature(key, forged, body)


def test_cosignature_with_a_wrong_key_id_or_name_is_refused() -> None:
    private, key = _witness()
    signer, head = _head()
    body = checkpoint_body(head, log_origin(signer.public_key))
    good = cosign(private, "yrd-tax", body, 1_700_000_000)
    bad_id = Cosignature(good.witness, b"\x00\x00\x00\x00", good.timestamp, good.signature)
    with pytest.raises(InvalidSignatureError, match="not the configured witness"):
        verify_cosignature(key, bad_id, body)
    renamed = Cosignature("yrd-court", good.key_id, good.timestamp, good.signature)
    with pytest.raises(InvalidSignatureError, match="not the configured witness"):
        verify_cosignature(key, renamed, body)


def test_cosign_refuses_anything_but_a_checkpoint() -> None:
    private, _ = _witness()
    with pytest.raises(InvalidInputError, match="three lines"):
        cosign(private, "yrd-tax", b"please sign this\n", 1_700_000_000)


@pytest.mark.parametrize("timestamp", [0, -1, 1 << 63])
def test_cosignature_timestamps_are_bounded(timestamp: int) -> None:
    with pytest.raises(InvalidInputError, match="timestamp"):
        Cosignature("w", b"abcd", timestamp, bytes(64))


def test_checkpoint_note_round_trip_with_cosignatures() -> None:
    private, key = _witness()
    signer, head = _head()
    body = checkpoint_body(head, log_origin(signer.public_key))
    cosignature = cosign(private, "yrd-tax", body, 1_700_000_000)
    text = checkpoint_note(head, signer.public_key, (cosignature,))
    assert text.startswith(body.decode() + "\n\u2014 " + log_origin(signer.public_key) + " ")
    assert text.endswith(cosignature.line())
    parsed, cosignatures = parse_checkpoint(text, signer.public_key)
    assert parsed == head
    assert cosignatures == (cosignature,)
    verify_cosignature(key, cosignatures[0], body)


def test_checkpoint_from_another_log_or_with_a_bad_log_signature_is_refused() -> None:
    signer, head = _head()
    text = checkpoint_note(head, signer.public_key)
    other = LogSigner.generate()
    with pytest.raises(InvalidSignatureError, match="not this log's"):
        parse_checkpoint(text, other.public_key)
    # Change the size line only: the log's signature no longer covers it.
    tampered = text.replace("\n7\n", "\n8\n", 1)
    with pytest.raises(InvalidSignatureError, match="bad signature"):
        parse_checkpoint(tampered, signer.public_key)
    # Drop the log's line, keep a cosignature-shaped one: no log signature at all.
    body, _, _ = text.partition("\n\n")
    alien = Cosignature("w", b"abcd", 1, bytes(64)).line()
    with pytest.raises(InvalidSignatureError, match="no signature line from the log key"):
        parse_checkpoint(body + "\n\n" + alien, signer.public_key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x\n\n", "at least one signature line"),
        ("x\n\u2014 a AAAAAAAA\n", "blank line"),
        ("x\n\n\u2014 a AAAAAAAA", "end with a newline"),
        ("x\n\n- a AAAAAAAA\n", "em dash"),
        ("x\n\n\u2014 a b c\n", "key name"),
        ("x\n\n\u2014 a !!!!\n", "not valid base64"),
        ("x\n\n\u2014 a AAAA\n", "shorter than a key id"),
        ("x\x01\n\n\u2014 a AAAAAAAA\n", "control characters"),
    ],
)
def test_malformed_notes_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        parse_note(text)


def test_oversize_notes_are_refused_before_parsing() -> None:
    big = "x" * MAX_NOTE_BYTES + "\n\n\u2014 a AAAAAAAA\n"
    with pytest.raises(InvalidInputError, match=f"at most {MAX_NOTE_BYTES} bytes"):
        parse_note(big)
    with pytest.raises(InvalidInputError, match=f"at most {MAX_NOTE_BYTES} bytes"):
        parse_note(big.encode())
    many = "x\n\n" + "\u2014 a AAAAAAAA\n" * (MAX_SIGNATURES + 1)
    with pytest.raises(InvalidInputError, match=f"at most {MAX_SIGNATURES} signature lines"):
        parse_note(many)
    with pytest.raises(InvalidInputError, match="over"):
        parse_note("x\n\n\u2014 a " + "A" * 400 + "\n")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        parse_note(b"\xff\n\n\xe2\x80\x94 a AAAAAAAA\n")


def test_fixed_key_vectors_do_not_drift() -> None:
    """Ed25519 is deterministic: these strings change only if a format changes (the vkey's
    base64 holds a '+', which must not be read as a separator)."""
    private, key = _witness()
    vkey = "yrd-tax+61551bea+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
    assert key.vkey() == vkey and WitnessKey.parse(vkey) == key
    body = b"creditshare/ledger/0123456789abcdef\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    line = (
        "\u2014 yrd-tax YVUb6gAAAABlU/EAo1CB2LsnaY8aJYoR9bBYstG/jlINcj4Dj+PGOTkaaEpKQE+jbake6s3O"
        "aFK/MnyvbF7i8HdXcdsP7AYZw/wxBA==\n"
    )
    assert cosign(private, "yrd-tax", body, 1_700_000_000).line() == line
    verify_cosignature(key, Cosignature.parse_line(line), body)
