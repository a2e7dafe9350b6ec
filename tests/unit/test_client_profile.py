"""Client-side decryption of a coordinator answer into a credit profile."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from creditshare.client import (
    CreditProfile,
    Indicator,
    ScoreScale,
    decrypt_profile,
    probability_of_default,
)
from creditshare.crypto import FixedPointEncoding, PrivateKey
from creditshare.departments import DEFAULT_INTERCEPT, DEFAULT_WEIGHTS, Record, get_department
from creditshare.errors import ClientError, InvalidCiphertextError
from creditshare.federated import ModelShard

SCALE = 10**6
GRADES = ["A", "B", "M", "C", "D"]
TAX_PAID_BANDS = ["under 10k", "10k–100k", "100k–1M", "1M–10M", "10M or more"]
ARREARS_BANDS = ["none", "1–3 months", "4–12 months", "over 12 months"]
COUNT_BANDS = ["none", "1", "2–4", "5 or more"]
PRESENCE_BANDS = ["no record", "record held"]


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> PrivateKey:
    return PrivateKey.generate()


# --------------------------------------------------------------------------- logistic link


def test_probability_of_default_at_zero_is_one_half() -> None:
    assert probability_of_default(0.0) == 0.5


@pytest.mark.parametrize("linear", [1000.0, 710.0, 1e6, 1e308])
def test_probability_of_default_large_positive(linear: float) -> None:
    assert probability_of_default(linear) == 1.0


@pytest.mark.parametrize("linear", [-1000.0, -710.0, -1e6, -1e308])
def test_probability_of_default_large_negative(linear: float) -> None:
    p = probability_of_default(linear)
    assert p == 0.0 or 0.0 < p < 1e-300


@pytest.mark.parametrize("linear", [0.001, 0.5, 1.0, 2.18, 10.0, 30.0, 50.0])
def test_probability_of_default_is_symmetric(linear: float) -> None:
    assert probability_of_default(linear) + probability_of_default(-linear) == pytest.approx(
        1.0, abs=1e-15
    )
    assert probability_of_default(-linear) < 0.5 < probability_of_default(linear)


@pytest.mark.parametrize("linear", [-5.0, -1.0, 0.25, 3.0])
def test_probability_of_default_matches_logistic(linear: float) -> None:
    assert probability_of_default(linear) == pytest.approx(1.0 / (1.0 + math.exp(-linear)))


def test_probability_of_default_is_monotonic() -> None:
    points = [probability_of_default(x / 4) for x in range(-80, 81)]
    assert points == sorted(points)
    assert len(set(points)) == len(points)


# --------------------------------------------------------------------------- score scale


def test_base_odds_score_base_points() -> None:
    assert ScoreScale().points(math.log(1 / 50)) == 600


@pytest.mark.parametrize("doublings", [1, 2, 3, -1, -2])
def test_every_doubling_of_good_odds_adds_forty_points(doublings: int) -> None:
    linear = math.log(1 / 50) - doublings * math.log(2)
    assert ScoreScale().points(linear) == 600 + 40 * doublings


def test_higher_risk_scores_fewer_points() -> None:
    scale = ScoreScale()
    assert scale.points(-2.0) > scale.points(0.0) > scale.points(2.0)
    assert scale.points(0.0) == round(600 - 40 / math.log(2) * math.log(50))  # 374


@pytest.mark.parametrize(
    ("linear", "points"), [(-100.0, 900), (-1e6, 900), (100.0, 300), (1e6, 300)]
)
def test_points_are_clamped(linear: float, points: int) -> None:
    assert ScoreScale().points(linear) == points


def test_custom_scale() -> None:
    scale = ScoreScale(base_score=500.0, base_odds=20.0, points_to_double_odds=20.0)
    assert scale.points(-math.log(20)) == 500
    assert scale.points(-math.log(20) - math.log(2)) == 520
    assert isinstance(scale.points(0.1234), int)


# --------------------------------------------------------------------------- decrypt_profile


def _item(
    key: PrivateKey,
    node: str,
    chain: str,
    department: str,
    name: str,
    value: float,
    bands: list[str],
    encoding: FixedPointEncoding,
) -> dict[str, Any]:
    return {
        "node": node,
        "chain": chain,
        "department": department,
        "name": name,
        "description": f"{name} of {node}",
        "bands": bands,
        "ciphertext": encoding.encrypt(value, key.public_key).to_text(),
    }


TAX_RECORD: Record = {"annual_tax_paid": 99999.0, "tax_credit_grade": "C", "months_in_arrears": 40}
TAX_PARTIAL = -0.15 * 5.0 + 0.35 * 3.0 + 0.08 * 36.0  # 3.18
LINEAR = DEFAULT_INTERCEPT + TAX_PARTIAL  # 2.18


def _body(key: PrivateKey, *, linear: float = LINEAR, scale: int = SCALE) -> dict[str, Any]:
    """What the coordinator sends: the tax node holds a record, the court node does not."""
    encoding = FixedPointEncoding(scale)

    def item(
        node: str, chain: str, department: str, name: str, value: float, bands: list[str]
    ) -> dict[str, Any]:
        return _item(key, node, chain, department, name, value, bands, encoding)

    return {
        "query_id": "q-123",
        "uscc": "91310101MA00000153",
        "model_id": "sme-scorecard-v1",
        "scale": scale,
        "public_key_fingerprint": key.public_key.fingerprint(),
        "encrypted_score": encoding.encrypt(linear, key.public_key).to_text(),
        "score_scale": {
            "base_score": 600.0,
            "base_odds": 50.0,
            "points_to_double_odds": 40.0,
            "minimum": 300.0,
            "maximum": 900.0,
        },
        "indicators": [
            item("tax-yrd", "yrd", "tax", "record_present", 1.0, PRESENCE_BANDS),
            item("tax-yrd", "yrd", "tax", "tax_credit_grade", 3.0, GRADES),
            item("tax-yrd", "yrd", "tax", "tax_paid_band", 1.0, TAX_PAID_BANDS),
            item("tax-yrd", "yrd", "tax", "months_in_arrears_band", 3.0, ARREARS_BANDS),
            item("tax-yrd", "yrd", "tax", "unbanded_ratio", 0.25, []),
            item("court-prd", "prd", "court", "record_present", 0.0, PRESENCE_BANDS),
            item("court-prd", "prd", "court", "judgments_band", 0.0, COUNT_BANDS),
            item("court-prd", "prd", "court", "dishonest_debtor", 0.0, ["not listed", "listed"]),
        ],
        "coverage": {
            "answered": ["tax-yrd", "court-prd"],
            "failed": [{"node": "utility-bth", "chain": "bth", "reason": "deadline exceeded"}],
        },
    }


def test_hand_built_values_agree_with_the_tax_department() -> None:
    tax = get_department("tax")
    shard = ModelShard(DEFAULT_WEIGHTS["tax"])
    assert shard.partial_score(tax.feature_values(TAX_RECORD)) == pytest.approx(TAX_PARTIAL)
    assert tax.indicator_values(TAX_RECORD) == {
        "tax_credit_grade": 3.0,
        "tax_paid_band": 1.0,
        "months_in_arrears_band": 3.0,
    }


def test_decrypt_profile_keeps_only_nodes_with_records(key: PrivateKey) -> None:
    body = _body(key)
    profile = decrypt_profile(body, key)
    assert isinstance(profile, CreditProfile)
    assert profile.query_id == "q-123"
    assert profile.uscc == "91310101MA00000153"
    assert profile.model_id == "sme-scorecard-v1"
    assert profile.nodes_with_records == ["tax-yrd"]
    assert profile.chains_with_records == ["yrd"]
    assert {i.node for i in profile.indicators} == {"tax-yrd"}
    assert [(i.name, i.value, i.label) for i in profile.indicators] == [
        ("record_present", 1.0, "record held"),
        ("tax_credit_grade", 3.0, "C"),
        ("tax_paid_band", 1.0, "10k–100k"),
        ("months_in_arrears_band", 3.0, "over 12 months"),
        ("unbanded_ratio", 0.25, None),
    ]
    first = profile.indicators[1]
    assert first == Indicator(
        node="tax-yrd",
        chain="yrd",
        department="tax",
        name="tax_credit_grade",
        description="tax_credit_grade of tax-yrd",
        value=3.0,
        label="C",
    )
    assert profile.answered == ["tax-yrd", "court-prd"]
    assert profile.failed == [
        {"node": "utility-bth", "chain": "bth", "reason": "deadline exceeded"}
    ]
    assert profile.raw is body


def test_decrypt_profile_linear_score_probability_and_points(key: PrivateKey) -> None:
    profile = decrypt_profile(_body(key), key)
    assert profile.linear_score == pytest.approx(2.18, abs=0.5 / SCALE)
    assert profile.linear_score == round(LINEAR * SCALE) / SCALE
    assert profile.probability_of_default == pytest.approx(1 / (1 + math.exp(-2.18)), abs=1e-6)
    raw_points = 600 - 40 / math.log(2) * (2.18 + math.log(50))  # about 248: below the floor
    assert raw_points < 300
    assert profile.score == 300
    assert profile.score == ScoreScale().points(profile.linear_score)


@pytest.mark.parametrize("linear", [math.log(1 / 50), -0.75, 0.0, -50.0])
def test_decrypt_profile_score_at_various_linear_values(key: PrivateKey, linear: float) -> None:
    profile = decrypt_profile(_body(key, linear=linear, scale=1000), key)
    assert profile.linear_score == round(linear * 1000) / 1000
    raw_points = 600 - 40 / math.log(2) * (profile.linear_score + math.log(50))
    assert profile.score == round(min(900.0, max(300.0, raw_points)))
    assert profile.score == ScoreScale().points(profile.linear_score)
    assert profile.probability_of_default == probability_of_default(profile.linear_score)


def test_decrypt_profile_uses_the_answer_score_scale(key: PrivateKey) -> None:
    body = _body(key, linear=math.log(1 / 20))
    body["score_scale"] = {
        "base_score": 500.0,
        "base_odds": 20.0,
        "points_to_double_odds": 20.0,
        "minimum": 100.0,
        "maximum": 800.0,
    }
    assert decrypt_profile(body, key).score == 500


def test_no_node_with_a_record_gives_an_empty_profile(key: PrivateKey) -> None:
    body = _body(key, linear=DEFAULT_INTERCEPT)
    body["indicators"] = [i for i in body["indicators"] if i["node"] == "court-prd"]
    profile = decrypt_profile(body, key)
    assert profile.nodes_with_records == []
    assert profile.indicators == []
    assert profile.chains_with_records == []
    assert profile.linear_score == DEFAULT_INTERCEPT


def test_two_nodes_with_records(key: PrivateKey) -> None:
    encoding = FixedPointEncoding(SCALE)
    body = _body(key)
    for item in body["indicators"]:
        if item["node"] == "court-prd":
            value = {"record_present": 1.0, "judgments_band": 2.0, "dishonest_debtor": 1.0}
            item["ciphertext"] = encoding.encrypt(value[item["name"]], key.public_key).to_text()
    profile = decrypt_profile(body, key)
    assert profile.nodes_with_records == ["court-prd", "tax-yrd"]
    assert profile.chains_with_records == ["prd", "yrd"]
    court = {i.name: i.label for i in profile.indicators if i.node == "court-prd"}
    assert court == {
        "record_present": "record held",
        "judgments_band": "2–4",
        "dishonest_debtor": "listed",
    }


def test_label_is_none_for_out_of_range_band_index(key: PrivateKey) -> None:
    encoding = FixedPointEncoding(SCALE)
    body = _body(key)
    body["indicators"][1]["ciphertext"] = encoding.encrypt(7.0, key.public_key).to_text()
    body["indicators"][2]["ciphertext"] = encoding.encrypt(-1.0, key.public_key).to_text()
    body["indicators"][3]["ciphertext"] = encoding.encrypt(1.5, key.public_key).to_text()
    profile = decrypt_profile(body, key)
    labels = {i.name: (i.value, i.label) for i in profile.indicators}
    assert labels["tax_credit_grade"] == (7.0, None)
    assert labels["tax_paid_band"] == (-1.0, None)
    assert labels["months_in_arrears_band"] == (1.5, None)


def test_answer_for_another_key_is_refused(key: PrivateKey, other_key: PrivateKey) -> None:
    body = _body(key)
    with pytest.raises(ClientError, match="different public key"):
        decrypt_profile(body, other_key)


@pytest.mark.parametrize("fingerprint", ["0000000000000000", "", None])
def test_answer_with_wrong_fingerprint_is_refused(key: PrivateKey, fingerprint: str | None) -> None:
    body = _body(key)
    if fingerprint is None:
        del body["public_key_fingerprint"]
    else:
        body["public_key_fingerprint"] = fingerprint
    with pytest.raises(ClientError):
        decrypt_profile(body, key)


def test_tampered_ciphertext_is_refused(key: PrivateKey) -> None:
    body = _body(key)
    body["encrypted_score"] = "AAAA"
    with pytest.raises(InvalidCiphertextError):
        decrypt_profile(body, key)


def test_key_file_is_private_even_over_a_world_readable_file(tmp_path: Path) -> None:
    from creditshare.client import load_or_create_key, save_key

    path = tmp_path / "keys" / "paillier.json"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    planted = tmp_path / "keys" / "paillier.json.tmp"
    planted.write_text("")
    planted.chmod(0o666)
    key = PrivateKey.generate()
    save_key(key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path).public_key == key.public_key
