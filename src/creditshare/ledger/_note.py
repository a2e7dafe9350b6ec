"""C2SP signed notes (c2sp.org/signed-note): text, a blank line, signature lines.

Tree heads are published in this form so that off-the-shelf transparency tooling
(and anyone with the spec) can read them, and because its cosignature lines are
what witnesses add. Parsing is strict and bounded: a note is at most
``MAX_NOTE_BYTES`` with at most ``MAX_SIGNATURES`` lines of signature, each error
naming the line at fault, so a hostile coordinator cannot make a client spend
more than a few kilobytes of work on a head.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from creditshare.errors import InvalidInputError

__all__ = [
    "MAX_KEY_NAME",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "NoteSignature",
    "SignedNote",
    "check_key_name",
    "note_key_id",
    "parse_note",
]

#: Bytes in a whole note; 16 signatures must fit (the spec's floor), with room to spare.
MAX_NOTE_BYTES = 16 * 1024
#: Signature lines in one note (the spec asks verifiers to accept at least 16).
MAX_SIGNATURES = 64
#: Characters in a key name (a schema-less URL such as ``example.com/w1``).
MAX_KEY_NAME = 256
#: Bytes a signature line's base64 may decode to: key id plus the largest signature used.
_MAX_SIGNATURE_BYTES = 4 + 8 + 64 + 64
_DASH = "\u2014"


def check_key_name(name: object, what: str = "key name") -> str:
    """A note key name: non-empty, no Unicode spaces, no ``+``, printable, bounded."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_KEY_NAME:
        raise InvalidInputError(f"{what} must be 1 to {MAX_KEY_NAME} characters")
    if "+" in name or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidInputError(f"{what} {name[:64]!r} must not contain spaces, '+' or controls")
    return name


def note_key_id(name: str, signature_type: bytes, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]``: the spec's key ID."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + signature_type + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: who (name + 4-byte key id) and the algorithm's bytes."""

    name: str
    key_id: bytes
    payload: bytes

    def line(self) -> str:
        encoded = base64.b64encode(self.key_id + self.payload).decode("ascii")
        return f"{_DASH} {self.name} {encoded}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """The note text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def _parse_signature(line: str, number: int) -> NoteSignature:
    where = f"note signature line {number}"
    if not line.startswith(_DASH + " "):
        raise InvalidInputError(f"{where} must start with an em dash and a space")
    parts = line[2:].split(" ")
    if len(parts) != 2:
        raise InvalidInputError(f"{where} must be '\u2014 <key name> <base64 signature>'")
    name = check_key_name(parts[0], f"{where} key name")
    if len(parts[1]) > 4 * ((_MAX_SIGNATURE_BYTES + 2) // 3):
        raise InvalidInputError(f"{where} signature is over {_MAX_SIGNATURE_BYTES} bytes")
    try:
        raw = base64.b64decode(parts[1].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidInputError(f"{where} signature is not valid base64") from exc
    if len(raw) < 5:
        raise InvalidInputError(f"{where} signature is shorter than a key id and one byte")
    return NoteSignature(name, raw[:4], raw[4:])


def parse_note(data: str | bytes) -> SignedNote:
    """Split a signed note into text and signature lines; raise ``InvalidInputError``.

    Nothing is verified here: which lines count is the caller's business (the spec
    says unknown keys are ignored, known keys must verify).
    """
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise InvalidInputError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"a signed note must be UTF-8: {exc.reason}") from None
    if len(data) > MAX_NOTE_BYTES or len(data.encode("utf-8")) > MAX_NOTE_BYTES:
        raise InvalidInputError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    if any(c < " " and c != "\n" for c in data):
        raise InvalidInputError("a signed note must not contain control characters but newline")
    if not data.endswith("\n"):
        raise InvalidInputError("a signed note must end with a newline")
    split = data.rfind("\n\n")
    if split < 0:
        raise InvalidInputError("a signed note needs a blank line before its signatures")
    text, block = data[: split + 1], data[split + 2 :]
    lines = block[:-1].split("\n") if block else []
    if not lines:
        raise InvalidInputError("a signed note needs at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise InvalidInputError(f"a signed note has at most {MAX_SIGNATURES} signature lines")
    signatures = tuple(_parse_signature(line, i + 1) for i, line in enumerate(lines))
    return SignedNote(text, signatures)
