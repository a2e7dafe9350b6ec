"""Unified social credit codes (USCC, GB 32100-2015): parsing, checking, building.

The USCC is the one key every department and every chain shares, so a typo in it
silently splits one enterprise into two. Validation is therefore strict and the
error names the first wrong position, which is what an operator fixing a data
file needs.

Layout (1-based positions)::

    1      registration authority      (e.g. 9 = market regulation)
    2      entity type                 (e.g. 1 = company under authority 9)
    3-8    administrative division     (GB/T 2260, six digits)
    9-17   organisation code           (GB 11714: 8 body chars + own check char)
    18     USCC check character

Both check characters are enforced. Real published codes, old (pure-digit
organisation codes) and new ("MA..." codes issued since 2015) alike, satisfy the
GB 11714 check at position 17, so a failure there is a typo, not a quirk of issuers.
Authority and entity-type codes are *not* checked against a list: the list has
grown since 2015 and rejecting a real code is worse than accepting an odd one.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import mul

from creditshare.errors import InvalidInputError
from creditshare.identity.chains import PROVINCE_NAMES, Chain, chain_for_province

__all__ = [
    "ALPHABET",
    "USCC_LENGTH",
    "InvalidUsccError",
    "Uscc",
    "check_character",
    "is_valid_uscc",
    "make_uscc",
]

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a USCC may contain; a character's value is its index here."""

USCC_LENGTH = 18

_VALUES: dict[str, int] = {char: index for index, char in enumerate(ALPHABET)}
_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_DIVISION = range(2, 8)  # 0-based slice of positions 3..8
_ORG_BODY = slice(8, 16)  # positions 9..16
_ORG_CHECK = 16  # position 17
_FORBIDDEN_LETTERS = frozenset("IOZSV")
_ALLOWED = frozenset(ALPHABET)
#: GB 11714 values of the organisation code's characters (letters 10..35 by A..Z).
_ORG_VALUES: dict[str, int] = {
    char: int(char) if char.isdigit() else ord(char) - ord("A") + 10 for char in ALPHABET
}


class InvalidUsccError(InvalidInputError):
    """A string that is not a valid USCC.

    ``position`` is the 1-based position of the first offending character, or
    ``None`` when the length is wrong (no single character is to blame then).
    """

    def __init__(self, position: int | None, reason: str) -> None:
        where = f"USCC position {position}: " if position is not None else "USCC "
        super().__init__(where + reason)
        self.position = position
        self.reason = reason


def _check_length(text: str, expected: int) -> None:
    if len(text) != expected:
        raise InvalidUsccError(None, f"must be {expected} characters, got {len(text)}")


def _check_alphabet(text: str) -> None:
    """Reject the first character outside the alphabet, or a non-digit division char."""
    if _ALLOWED.issuperset(text) and text[2:8].isdigit():
        return  # the common case, checked in C (a node imports millions of codes)
    for index, char in enumerate(text):
        position = index + 1
        if char not in _VALUES:
            if char in _FORBIDDEN_LETTERS:
                why = "the letters I, O, Z, S and V are never used"
            else:
                why = f"only digits and the letters {ALPHABET[10:]} are used"
            raise InvalidUsccError(position, f"{char!r} is not allowed ({why})")
        if index in _DIVISION and not char.isdigit():
            raise InvalidUsccError(
                position, f"{char!r} is not allowed (administrative-division code is 6 digits)"
            )


def _weighted_sum(text: str) -> int:
    """Over exactly 17 characters of the alphabet (callers check both first)."""
    return sum(map(mul, map(_VALUES.__getitem__, text), _WEIGHTS))


def _check_character_unchecked(first17: str) -> str:
    remainder = 31 - _weighted_sum(first17) % 31
    return ALPHABET[0 if remainder == 31 else remainder]


def _org_check_character(body: str) -> str:
    """GB 11714 check character over the 8 organisation-code body characters.

    Here letters count 10..35 by their place in the full Latin alphabet, unlike the
    USCC's own 31-character scheme.
    """
    total = sum(map(mul, map(_ORG_VALUES.__getitem__, body), _ORG_WEIGHTS))
    remainder = 11 - total % 11
    if remainder == 10:
        return "X"
    if remainder == 11:
        return "0"
    return str(remainder)


def check_character(first17: str) -> str:
    """Return the USCC check character (position 18) for the first 17 characters.

    Only the shape of ``first17`` is validated (length, alphabet, division digits),
    not the organisation-code check: callers computing a check character are
    usually building a code, and ``make_uscc`` takes care of position 17.
    """
    _check_length(first17, USCC_LENGTH - 1)
    _check_alphabet(first17)
    return _check_character_unchecked(first17)


def _validate(code: str) -> None:
    _check_length(code, USCC_LENGTH)
    _check_alphabet(code)
    org_expected = _org_check_character(code[_ORG_BODY])
    if code[_ORG_CHECK] != org_expected:
        raise InvalidUsccError(
            _ORG_CHECK + 1,
            f"organisation-code check character is {code[_ORG_CHECK]!r}, expected {org_expected!r}",
        )
    expected = _check_character_unchecked(code[:17])
    if code[17] != expected:
        raise InvalidUsccError(
            USCC_LENGTH, f"check character is {code[17]!r}, expected {expected!r}"
        )


@dataclass(frozen=True)
class Uscc:
    """A validated USCC in canonical form (uppercase, no surrounding whitespace).

    Construction validates too, so holding a ``Uscc`` is proof of validity; use
    ``parse`` for untrusted text that may need normalising first.
    """

    code: str

    def __post_init__(self) -> None:
        _validate(self.code)

    @classmethod
    def parse(cls, text: str) -> Uscc:
        """Normalise (strip, uppercase) and validate, naming the first wrong position."""
        return cls(text.strip().upper())

    @property
    def division_code(self) -> str:
        """Six-digit GB/T 2260 code of the registering authority's area."""
        return self.code[2:8]

    @property
    def province_code(self) -> str:
        """Two-digit province part of the division code; decides the home chain."""
        return self.code[2:4]

    @property
    def chain(self) -> Chain:
        """The home chain; a code registered outside every chain is an input error here."""
        found = chain_for_province(self.province_code)
        if found is None:
            province = self.province_code
            name = PROVINCE_NAMES.get(province)
            label = f"{province} ({name})" if name else province
            raise InvalidUsccError(3, f"province {label} belongs to no credit chain")
        return found

    def __str__(self) -> str:
        return self.code


def make_uscc(registration: str, entity_type: str, division: str, org_body: str) -> Uscc:
    """Assemble a valid USCC, computing both check characters.

    Exists for the synthetic generator and for tests, which need many valid codes
    without hand-computing checksums. The parts are validated as a whole, so an
    error names the position the bad part would occupy in the finished code.
    """
    parts = registration + entity_type + division + org_body
    lengths = (len(registration), len(entity_type), len(division), len(org_body))
    if lengths != (1, 1, 6, 8):
        raise InvalidUsccError(
            None,
            "parts must be 1 + 1 + 6 + 8 characters (registration, entity type, "
            "division, organisation body), got " + " + ".join(map(str, lengths)),
        )
    _check_alphabet(parts)
    first17 = parts + _org_check_character(org_body)
    return Uscc(first17 + _check_character_unchecked(first17))


def is_valid_uscc(text: str) -> bool:
    """Whether ``Uscc.parse`` would accept ``text`` (so lowercase/padding is fine)."""
    try:
        Uscc.parse(text)
    except InvalidUsccError:
        return False
    return True
