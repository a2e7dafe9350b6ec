"""USCC parsing and checking: known answers, every failure mode, chain mapping."""

from __future__ import annotations

import random

import pytest

from creditshare.errors import InvalidInputError
from creditshare.identity import (
    ALPHABET,
    DIVISIONS,
    PROVINCE_NAMES,
    Chain,
    InvalidUsccError,
    Uscc,
    chain_for_province,
    check_character,
    is_valid_uscc,
    make_uscc,
)

# Published codes of well-known enterprises (business licences / annual reports),
# plus the GB 32100 sample code. All satisfy both check characters.
REAL_CODES = [
    "91350100M000100Y43",  # GB 32100 / widely used sample code (Fuzhou)
    "914403001922038216",  # Huawei Technologies Co., Ltd. (Shenzhen)
    "91440300708461136T",  # Shenzhen Tencent Computer Systems Co., Ltd.
    "91440300192317458F",  # BYD Co., Ltd. (Shenzhen)
    "91520000214434146R",  # Kweichow Moutai Co., Ltd.
    "91100000100003962T",  # Industrial and Commercial Bank of China
    "91110108558521630L",  # Xiaomi Communications Co., Ltd. (Beijing Haidian)
]

VALID = "91350100M000100Y43"


def _replace(code: str, position: int, char: str) -> str:
    return code[: position - 1] + char + code[position:]


def _error(text: str) -> InvalidUsccError:
    with pytest.raises(InvalidUsccError) as caught:
        Uscc.parse(text)
    return caught.value


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_published_codes_are_valid(code: str) -> None:
    assert is_valid_uscc(code)
    assert str(Uscc.parse(code)) == code


@pytest.mark.parametrize(
    ("first17", "expected"),
    [
        ("91350100M000100Y4", "3"),
        ("91440300192203821", "6"),
        ("91440300708461136", "T"),
        ("91100000100003962", "T"),
        ("91520000214434146", "R"),
    ],
)
def test_check_character_known_answers(first17: str, expected: str) -> None:
    assert check_character(first17) == expected


def test_check_character_zero_case() -> None:
    # A weighted sum divisible by 31 maps to check value 0, not 31.
    code = next(
        c.code
        for c in (make_uscc("9", "1", "320500", f"MA{n:06d}") for n in range(10_000))
        if c.code.endswith("0")
    )
    assert check_character(code[:17]) == "0"


def test_check_character_rejects_bad_input() -> None:
    with pytest.raises(InvalidUsccError) as caught:
        check_character("9135010")
    assert caught.value.position is None
    with pytest.raises(InvalidUsccError) as caught:
        check_character("91350100M0001OOY4")
    assert caught.value.position == 14


@pytest.mark.parametrize("text", ["91350100M000100Y4", "91350100M000100Y433", ""])
def test_wrong_length_has_no_position(text: str) -> None:
    error = _error(text)
    assert error.position is None
    assert error.reason == f"must be 18 characters, got {len(text)}"
    assert str(error) == f"USCC must be 18 characters, got {len(text)}"


@pytest.mark.parametrize("letter", list("IOZSV"))
@pytest.mark.parametrize("position", [1, 2, 9, 12, 16])
def test_forbidden_letter_names_its_position(letter: str, position: int) -> None:
    error = _error(_replace(VALID, position, letter))
    assert error.position == position
    assert str(error).startswith(f"USCC position {position}: {letter!r} is not allowed (")


@pytest.mark.parametrize("char", ["#", "-", " ", "é", "Ｉ"])
def test_non_alphabet_character_names_its_position(char: str) -> None:
    error = _error(_replace(VALID, 10, char))
    assert error.position == 10


def test_wrong_check_character_is_position_18() -> None:
    error = _error(_replace(VALID, 18, "X"))
    assert error.position == 18
    assert str(error) == "USCC position 18: check character is 'X', expected '3'"


@pytest.mark.parametrize("position", range(3, 9))
def test_non_digit_division_names_its_position(position: int) -> None:
    error = _error(_replace(VALID, position, "A"))
    assert error.position == position
    assert "administrative-division" in error.reason


def test_wrong_organisation_check_is_position_17() -> None:
    # Keep the USCC check consistent so only the GB 11714 check can fail.
    first16 = VALID[:16]
    first17 = first16 + "5"  # correct org check character is "4"
    error = _error(first17 + check_character(first17))
    assert error.position == 17
    assert error.reason == "organisation-code check character is '5', expected '4'"


def test_first_wrong_position_wins() -> None:
    bad = _replace(_replace(VALID, 12, "O"), 5, "A")
    assert _error(bad).position == 5


def test_every_single_substitution_is_detected() -> None:
    rng = random.Random(1)
    made = [
        make_uscc("9", "1", rng.choice(DIVISIONS["33"]).code, "".join(rng.sample(ALPHABET, 8))).code
        for _ in range(5)
    ]
    for code in [*made, *REAL_CODES]:
        for index, original in enumerate(code):
            for char in ALPHABET.replace(original, ""):
                assert not is_valid_uscc(code[:index] + char + code[index + 1 :])


def test_parse_normalises_case_and_whitespace() -> None:
    parsed = Uscc.parse("  91350100m000100y43\n")
    assert parsed == Uscc(VALID)
    assert parsed.code == VALID
    assert is_valid_uscc("\t91440300708461136t ")


def test_direct_construction_requires_canonical_form() -> None:
    with pytest.raises(InvalidUsccError):
        Uscc("91350100m000100y43")
    with pytest.raises(InvalidUsccError):
        Uscc(" " + VALID)


def test_properties() -> None:
    uscc = Uscc.parse("914403001922038216")
    assert uscc.division_code == "440300"
    assert uscc.province_code == "44"
    assert uscc.chain is Chain.PRD
    assert str(uscc) == "914403001922038216"


def test_error_is_an_input_error() -> None:
    error = _error("X")
    assert isinstance(error, InvalidInputError)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("code", ["91350100M000100Y43", "91100000100003962T", "91520000214434146R"])
def test_province_outside_every_chain_is_position_3(code: str) -> None:
    uscc = Uscc.parse(code)  # a valid code, just not in the network
    with pytest.raises(InvalidUsccError) as caught:
        _ = uscc.chain
    assert caught.value.position == 3
    assert "belongs to no credit chain" in caught.value.reason


@pytest.mark.parametrize(
    ("province", "chain"),
    [
        ("31", Chain.YRD),
        ("32", Chain.YRD),
        ("33", Chain.YRD),
        ("34", Chain.YRD),
        ("44", Chain.PRD),
        ("11", Chain.BTH),
        ("12", Chain.BTH),
        ("13", Chain.BTH),
    ],
)
def test_chain_for_each_province(province: str, chain: Chain) -> None:
    assert chain_for_province(province) is chain
    assert province in chain.provinces
    assert province in PROVINCE_NAMES
    for division in DIVISIONS[province]:
        assert division.province_code == province
        uscc = make_uscc("9", "1", division.code, "MA1B2C3D")
        assert uscc.chain is chain


@pytest.mark.parametrize("province", ["10", "35", "37", "44 ", "4", "99"])
def test_provinces_outside_chains(province: str) -> None:
    assert chain_for_province(province) is None


def test_chain_metadata() -> None:
    assert Chain("yrd") is Chain.YRD
    assert str(Chain.BTH) == "bth"
    assert Chain.YRD.display_name == "Yangtze River Delta"
    assert Chain.PRD.display_name == "Pearl River Delta"
    assert Chain.BTH.display_name == "Beijing–Tianjin–Hebei"
    assert set(DIVISIONS) == {p for chain in Chain for p in chain.provinces}
    for divisions in DIVISIONS.values():
        assert 3 <= len(divisions) <= 6
        assert all(len(d.code) == 6 and d.code.isdigit() for d in divisions)


@pytest.mark.parametrize(
    ("registration", "entity_type", "division", "body"),
    [
        ("9", "1", "320500", "MA1XRT0Y"),
        ("9", "2", "440300", "MA5H0HLK"),
        ("9", "3", "130100", "MA0D8N1J"),
        ("9", "1", "110105", "10001231"),
        ("1", "2", "310101", "42500000"),
    ],
)
def test_make_uscc_round_trip(
    registration: str, entity_type: str, division: str, body: str
) -> None:
    uscc = make_uscc(registration, entity_type, division, body)
    assert Uscc.parse(str(uscc)) == uscc
    assert uscc.code[:2] == registration + entity_type
    assert uscc.division_code == division
    assert uscc.code[8:16] == body
    assert uscc.code[17] == check_character(uscc.code[:17])


def test_make_uscc_reproduces_real_codes() -> None:
    for code in REAL_CODES:
        assert make_uscc(code[0], code[1], code[2:8], code[8:16]).code == code


def test_make_uscc_rejects_bad_parts() -> None:
    with pytest.raises(InvalidUsccError) as caught:
        make_uscc("91", "1", "320500", "MA1XRT0Y")
    assert caught.value.position is None
    with pytest.raises(InvalidUsccError) as caught:
        make_uscc("9", "1", "3205A0", "MA1XRT0Y")
    assert caught.value.position == 7
    with pytest.raises(InvalidUsccError) as caught:
        make_uscc("9", "1", "320500", "MA1XRTOY")
    assert caught.value.position == 15


def test_is_valid_uscc() -> None:
    assert is_valid_uscc(VALID)
    assert not is_valid_uscc(VALID[:-1] + "4")
    assert not is_valid_uscc("")
    assert not is_valid_uscc("not a code at all!")
