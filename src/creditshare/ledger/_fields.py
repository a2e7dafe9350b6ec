"""Reading and writing the JSON text forms of ledger objects, with clear errors.

Tree heads and receipts travel as JSON between the coordinator, data nodes and
enterprises. Binary fields are standard base64 (with padding); every field is
checked for type and length on the way in so a malformed document is refused
with the field's name rather than failing later inside a hash or a signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from creditshare.errors import InvalidInputError

__all__ = ["b64", "get_b64", "get_int", "get_list", "get_mapping", "get_str"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _get(data: Mapping[str, object], name: str, what: str) -> object:
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(data).__name__}")
    if name not in data:
        raise InvalidInputError(f"{what} is missing the field {name!r}")
    return data[name]


def get_int(data: Mapping[str, object], name: str, what: str) -> int:
    value = _get(data, name, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{what}.{name} must be an integer, got {type(value).__name__}")
    return value


def get_str(data: Mapping[str, object], name: str, what: str) -> str:
    value = _get(data, name, what)
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}.{name} must be a string, got {type(value).__name__}")
    return value


def _decode(value: object, where: str, length: int | None, max_length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a base64 string, got {type(value).__name__}")
    longest = length if length is not None else max_length
    if longest is not None and len(value) > 4 * ((longest + 2) // 3):
        # Refused before decoding: a bounded field cannot make the reader decode a huge text.
        raise InvalidInputError(f"{where} must decode to at most {longest} bytes")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidInputError(f"{where} is not valid base64") from exc
    if length is not None and len(raw) != length:
        raise InvalidInputError(f"{where} must decode to {length} bytes, got {len(raw)}")
    if max_length is not None and len(raw) > max_length:
        raise InvalidInputError(f"{where} must decode to at most {max_length} bytes")
    return raw


def get_b64(
    data: Mapping[str, object],
    name: str,
    what: str,
    length: int | None = None,
    *,
    max_length: int | None = None,
) -> bytes:
    """A base64 field of exactly ``length`` (or at most ``max_length``) bytes, if given."""
    return _decode(_get(data, name, what), f"{what}.{name}", length, max_length)


def get_list(
    data: Mapping[str, object],
    name: str,
    what: str,
    length: int | None = None,
    *,
    max_items: int | None = None,
) -> list[bytes]:
    """A list of base64 strings, each decoding to ``length`` bytes if given."""
    value = _get(data, name, what)
    if not isinstance(value, list):
        raise InvalidInputError(f"{what}.{name} must be a list, got {type(value).__name__}")
    if max_items is not None and len(value) > max_items:
        raise InvalidInputError(f"{what}.{name} must hold at most {max_items} items")
    return [_decode(item, f"{what}.{name}[{i}]", length) for i, item in enumerate(value)]


def get_mapping(data: Mapping[str, object], name: str, what: str) -> Mapping[str, object]:
    value = _get(data, name, what)
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what}.{name} must be a JSON object, got {type(value).__name__}")
    return value
