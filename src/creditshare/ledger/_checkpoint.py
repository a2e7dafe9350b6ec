"""Checkpoints and witness cosignatures (c2sp.org/tlog-checkpoint, tlog-cosignature).

A data node that accepted a tree head (it extends the one the node trusts) says so
by cosigning the head's checkpoint; a client that demands a quorum of such
cosignatures from distinct witnesses knows that a split view of the log would need
that many nodes to collude, not only the coordinator.

The formats are C2SP's, so the published checkpoint reads with standard tooling:

- checkpoint body: origin line, decimal size, base64 root (``checkpoint_body``);
  the origin of our log is ``creditshare/ledger/<log key id>`` (``log_origin``).
- cosignature/v1: Ed25519 over ``"cosignature/v1\\ntime <seconds>\\n" + body``;
  signature bytes ``timestamp (8, big-endian) || signature (64)``; key id
  ``SHA-256(name || "\\n" || 0x04 || public key)[:4]``; vkey
  ``<name>+<hex key id>+base64(0x04 || public key)``.
- the log's own line: our tree-head signature signs a binary message that includes
  a millisecond timestamp the checkpoint body lacks, so its line uses signature type
  0xFF + ``creditshare/sth/v1`` and carries ``timestamp_ms (8) || signature (64)``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.ledger._fields import b64, get_int, get_str
from creditshare.ledger._merkle import HASH_SIZE
from creditshare.ledger._note import (
    NoteSignature,
    SignedNote,
    check_key_name,
    note_key_id,
    parse_note,
)
from creditshare.ledger._tree_head import SIGNATURE_SIZE, SignedTreeHead, key_id_for

__all__ = [
    "COSIGNATURE_TYPE",
    "LOG_ORIGIN_PREFIX",
    "Checkpoint",
    "Cosignature",
    "WitnessKey",
    "checkpoint_body",
    "checkpoint_note",
    "cosign",
    "cosignature_message",
    "log_origin",
    "parse_checkpoint",
    "parse_checkpoint_body",
    "verify_cosignature",
]

#: Signature type byte of timestamped Ed25519 cosignatures (signed-note registry).
COSIGNATURE_TYPE = b"\x04"
#: Our log's tree-head signatures: "no byte assigned" (0xFF) and a long identifier.
_LOG_SIGNATURE_TYPE = b"\xffcreditshare/sth/v1"
#: Every creditshare ledger's origin line starts with this; the log key id follows.
LOG_ORIGIN_PREFIX = "creditshare/ledger/"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = (1 << 63) - 1
_KEY_ID_SIZE = 4
_PUBLIC_KEY_SIZE = 32


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def log_origin(log_key: Ed25519PublicKey) -> str:
    """The checkpoint origin of the log signed by ``log_key`` (defined here, once)."""
    return LOG_ORIGIN_PREFIX + key_id_for(log_key)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def checkpoint_body(head: SignedTreeHead, origin: str) -> bytes:
    """The C2SP checkpoint note text of ``head``: what witnesses cosign."""
    check_key_name(origin, "checkpoint origin")
    root = base64.b64encode(head.root).decode("ascii")
    return f"{origin}\n{head.size}\n{root}\n".encode()


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Exactly origin, size and root lines (this log writes no extension lines)."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise InvalidInputError(
            "a checkpoint body is three lines (origin, size, root), each ending in a newline"
        )
    origin, size_text, root_text = lines[:3]
    check_key_name(origin, "checkpoint origin")
    if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 20:
        raise InvalidInputError(f"checkpoint size {size_text[:24]!r} is not a decimal number")
    if size_text != str(int(size_text)):
        raise InvalidInputError(f"checkpoint size {size_text!r} has leading zeroes")
    size = int(size_text)
    if size >= 1 << 64:
        raise InvalidInputError("checkpoint size is over 2^64-1")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidInputError("checkpoint root hash is not valid base64") from exc
    if len(root) != HASH_SIZE:
        raise InvalidInputError(f"checkpoint root hash must be {HASH_SIZE} bytes, got {len(root)}")
    return Checkpoint(origin, size, root)


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness: its name (a data node's id) and its Ed25519 cosigning public key."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name, "witness name")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != _PUBLIC_KEY_SIZE:
            raise InvalidInputError(f"a witness public key is {_PUBLIC_KEY_SIZE} bytes")

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> Self:
        return cls(name, _raw(public_key))

    @property
    def key_id(self) -> bytes:
        return note_key_id(self.name, COSIGNATURE_TYPE, self.public_key)

    def vkey(self) -> str:
        """``<name>+<hex key id>+base64(0x04 || key)``: the text form clients configure."""
        key = base64.b64encode(COSIGNATURE_TYPE + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{key}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read a vkey; the key id must match the name and key (a typo cannot slip by)."""
        if not isinstance(text, str) or len(text) > 400:
            raise InvalidInputError("a witness vkey is a short text '<name>+<key id>+<key>'")
        parts = text.strip().split("+", 2)  # the base64 key may itself hold a "+"
        if len(parts) != 3:
            raise InvalidInputError(
                "a witness vkey has three parts separated by '+': name, key id, key"
            )
        name, hex_id, encoded = parts
        check_key_name(name, "witness vkey name")
        if len(hex_id) != 2 * _KEY_ID_SIZE or any(c not in "0123456789abcdef" for c in hex_id):
            raise InvalidInputError(f"witness vkey {name!r}: key id must be 8 lowercase hex digits")
        try:
            raw = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidInputError(f"witness vkey {name!r}: key is not valid base64") from exc
        if len(raw) != 1 + _PUBLIC_KEY_SIZE or raw[:1] != COSIGNATURE_TYPE:
            raise InvalidInputError(
                f"witness vkey {name!r}: key must be type 0x04 (cosignature/v1) and "
                f"{_PUBLIC_KEY_SIZE} bytes"
            )
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id:
            raise InvalidInputError(
                f"witness vkey {name!r}: key id {hex_id} does not match its name and key "
                f"(expected {key.key_id.hex()})"
            )
        return key

    def __str__(self) -> str:
        return self.vkey()


def _check_timestamp(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_TIMESTAMP:
        raise InvalidInputError(f"cosignature timestamp must be within 1..2^63-1, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One witness's timestamped Ed25519 signature over a checkpoint body."""

    witness: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.witness, "cosignature witness")
        if not isinstance(self.key_id, bytes) or len(self.key_id) != _KEY_ID_SIZE:
            raise InvalidInputError(f"cosignature key id must be {_KEY_ID_SIZE} bytes")
        _check_timestamp(self.timestamp)
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise InvalidInputError(f"cosignature signature must be {SIGNATURE_SIZE} bytes")

    def note_signature(self) -> NoteSignature:
        return NoteSignature(
            self.witness, self.key_id, self.timestamp.to_bytes(8, "big") + self.signature
        )

    def line(self) -> str:
        """The signature line, ``— <witness> base64(key id || timestamp || signature)``."""
        return self.note_signature().line()

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Self:
        if len(sig.payload) != 8 + SIGNATURE_SIZE:
            raise InvalidInputError(
                f"cosignature by {sig.name!r} must be 8 + {SIGNATURE_SIZE} bytes after its key id"
            )
        timestamp = int.from_bytes(sig.payload[:8], "big")
        return cls(sig.name, sig.key_id, timestamp, sig.payload[8:])

    @classmethod
    def parse_line(cls, line: str) -> Self:
        """One cosignature line (as tlog-witness add-checkpoint returns it)."""
        note = parse_note("x\n\n" + line if line.endswith("\n") else "x\n\n" + line + "\n")
        if len(note.signatures) != 1:
            raise InvalidInputError("expected exactly one cosignature line")
        return cls.from_note_signature(note.signatures[0])

    def to_dict(self) -> dict[str, str | int]:
        return {
            "witness": self.witness,
            "key_id": self.key_id.hex(),
            "timestamp": self.timestamp,
            "signature": b64(self.signature),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Self:
        what = "cosignature"
        hex_id = get_str(data, "key_id", what)
        if len(hex_id) != 2 * _KEY_ID_SIZE or any(c not in "0123456789abcdef" for c in hex_id):
            raise InvalidInputError("cosignature.key_id must be 8 lowercase hex digits")
        signature_text = get_str(data, "signature", what)
        try:
            signature = base64.b64decode(signature_text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidInputError("cosignature.signature is not valid base64") from exc
        return cls(
            get_str(data, "witness", what),
            bytes.fromhex(hex_id),
            get_int(data, "timestamp", what),
            signature,
        )


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    """The exact bytes a cosignature/v1 signs."""
    _check_timestamp(timestamp)
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n".encode() + body


def cosign(private_key: Ed25519PrivateKey, name: str, body: bytes, timestamp: int) -> Cosignature:
    """Witness ``name`` cosigns checkpoint ``body`` at ``timestamp`` (POSIX seconds)."""
    parse_checkpoint_body(body.decode("utf-8"))  # never sign anything but a checkpoint
    key = WitnessKey.from_public_key(name, private_key.public_key())
    signature = private_key.sign(cosignature_message(body, timestamp))
    return Cosignature(name, key.key_id, timestamp, signature)


def verify_cosignature(key: WitnessKey, cosignature: Cosignature, body: bytes) -> None:
    """Raise ``InvalidSignatureError`` unless ``key`` cosigned ``body`` as claimed."""
    if cosignature.witness != key.name or cosignature.key_id != key.key_id:
        raise InvalidSignatureError(
            f"cosignature names {cosignature.witness} key {cosignature.key_id.hex()}, "
            f"not the configured witness {key.name} key {key.key_id.hex()}"
        )
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    try:
        public.verify(cosignature.signature, cosignature_message(body, cosignature.timestamp))
    except InvalidSignature:
        raise InvalidSignatureError(
            f"cosignature by witness {key.name} does not verify over this checkpoint"
        ) from None


def _log_key_id(origin: str, log_key: Ed25519PublicKey) -> bytes:
    return note_key_id(origin, _LOG_SIGNATURE_TYPE, _raw(log_key))


def checkpoint_note(
    head: SignedTreeHead, log_key: Ed25519PublicKey, cosignatures: tuple[Cosignature, ...] = ()
) -> str:
    """The full text form: checkpoint body, the log's line, then the cosignature lines."""
    origin = log_origin(log_key)
    payload = head.timestamp_ms.to_bytes(8, "big") + head.signature
    log_line = NoteSignature(origin, _log_key_id(origin, log_key), payload)
    body = checkpoint_body(head, origin).decode("utf-8")
    note = SignedNote(body, (log_line, *(c.note_signature() for c in cosignatures)))
    return note.format()


def parse_checkpoint(
    text: str | bytes, log_key: Ed25519PublicKey
) -> tuple[SignedTreeHead, tuple[Cosignature, ...]]:
    """Read a published checkpoint: the head (its log signature verified) and the
    cosignature lines as they stand (verify them against your witnesses' keys).

    Lines from keys other than the log's that are not cosignature-shaped are ignored,
    as the signed-note spec says for unknown keys.
    """
    note = parse_note(text)
    checkpoint = parse_checkpoint_body(note.text)
    origin = log_origin(log_key)
    if checkpoint.origin != origin:
        raise InvalidSignatureError(
            f"checkpoint origin {checkpoint.origin!r} is not this log's {origin!r}"
        )
    log_id = _log_key_id(origin, log_key)
    head: SignedTreeHead | None = None
    cosignatures: list[Cosignature] = []
    for sig in note.signatures:
        if sig.name == origin and sig.key_id == log_id:
            if len(sig.payload) != 8 + SIGNATURE_SIZE:
                raise InvalidInputError("the log's signature line has the wrong length")
            head = SignedTreeHead(
                checkpoint.size,
                checkpoint.root,
                int.from_bytes(sig.payload[:8], "big"),
                sig.payload[8:],
                key_id_for(log_key),
            )
            head.verify(log_key)
        elif len(sig.payload) == 8 + SIGNATURE_SIZE:
            try:
                cosignatures.append(Cosignature.from_note_signature(sig))
            except InvalidInputError:
                continue  # not a cosignature we could know: ignored, as unknown keys are
    if head is None:
        raise InvalidSignatureError("the checkpoint has no signature line from the log key")
    return head, tuple(cosignatures)
