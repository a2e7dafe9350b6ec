"""Service settings: TOML file plus environment (environment wins), refused with a clear reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings, ModelEntry, NodeEntry, ScoreScale
from creditshare.crypto import MAX_SCALE, SigningKey
from creditshare.errors import ConfigurationError
from creditshare.identity import Chain
from creditshare.node import ModelShardSettings, NodeSettings

NODE_TOML = """\
node_id = "tax-yrd"
department = "tax"
chain = "yrd"
display_name = "Shanghai tax"
listen = "127.0.0.1:6001"
database_url = "sqlite:///tax.db"

[models.sme-scorecard-v1.weights]
tax_paid_log10 = -0.15
tax_grade_risk = 0.35
tax_arrears_months = 0.08
"""

COORDINATOR_TOML = """\
host = "192.0.2.10"
port = 8100
node_deadline_seconds = 2.5
scale = 1000

[[nodes]]
id = "tax-yrd"
chain = "yrd"
department = "tax"
address = "127.0.0.1:6001"

[[nodes]]
id = "court-prd"
chain = "prd"
department = "court"
address = "127.0.0.1:6002"

[[models]]
id = "sme-scorecard-v1"
intercept = -1.0

[models.score_scale]
base_score = 500.0
minimum = 100.0
maximum = 800.0
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: make sure only what a test sets is there."""
    for name in list(os.environ):
        if name.upper().startswith("CREDITSHARE_"):
            monkeypatch.delenv(name)
    # The trust settings every service must have; the tests here are about the rest.
    monkeypatch.setenv(
        "CREDITSHARE_NODE_LOG_PUBLIC_KEY", SigningKey.generate().verify_key.to_text()
    )
    monkeypatch.setenv("CREDITSHARE_NODE_ALLOW_INSECURE", "true")
    monkeypatch.setenv("CREDITSHARE_NODE_CREDENTIAL_CA", "/nonexistent/ca.crt")
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_LOG_SIGNING_KEY_FILE", "/nonexistent/log.pem")
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_ALLOW_INSECURE", "true")


def _write(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _config_error(cls: type[NodeSettings] | type[CoordinatorSettings], path: Path) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(cls, path)
    return str(caught.value)


# --------------------------------------------------------------------------- node settings


def test_node_settings_from_toml(tmp_path: Path) -> None:
    settings = load_settings(NodeSettings, _write(tmp_path, NODE_TOML))
    assert settings.node_id == "tax-yrd"
    assert settings.department == "tax"
    assert settings.department_schema.id == "tax"
    assert settings.chain is Chain.YRD
    assert settings.display_name == "Shanghai tax"
    assert settings.listen == "127.0.0.1:6001"
    assert settings.database_url == "sqlite:///tax.db"
    assert settings.max_concurrent_requests == 64
    assert set(settings.models) == {"sme-scorecard-v1"}
    shard = settings.models["sme-scorecard-v1"]
    assert isinstance(shard, ModelShardSettings)
    assert shard.weights == {
        "tax_paid_log10": -0.15,
        "tax_grade_risk": 0.35,
        "tax_arrears_months": 0.08,
    }


def test_node_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, 'node_id = "court-bth"\ndepartment = "court"\nchain = "bth"\n')
    settings = load_settings(NodeSettings, path)
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url == "sqlite:///node.db"
    assert settings.models == {}
    assert settings.display_name == ""


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, NODE_TOML)
    monkeypatch.setenv("CREDITSHARE_NODE_LISTEN", "192.0.2.10:7000")
    monkeypatch.setenv("CREDITSHARE_NODE_MAX_CONCURRENT_REQUESTS", "5")
    settings = load_settings(NodeSettings, path)
    assert settings.listen == "192.0.2.10:7000"
    assert settings.max_concurrent_requests == 5
    # Values the environment does not mention still come from the file.
    assert settings.database_url == "sqlite:///tax.db"
    assert settings.node_id == "tax-yrd"


def test_environment_overrides_keyword_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, NODE_TOML)
    assert load_settings(NodeSettings, path, listen="10.0.0.1:1").listen == "10.0.0.1:1"
    monkeypatch.setenv("CREDITSHARE_NODE_LISTEN", "192.0.2.10:7000")
    assert load_settings(NodeSettings, path, listen="10.0.0.1:1").listen == "192.0.2.10:7000"


def test_environment_alone_can_configure_a_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITSHARE_NODE_NODE_ID", "social-prd")
    monkeypatch.setenv("CREDITSHARE_NODE_DEPARTMENT", "social")
    monkeypatch.setenv("CREDITSHARE_NODE_CHAIN", "prd")
    settings = load_settings(NodeSettings)
    assert (settings.node_id, settings.department, settings.chain) == (
        "social-prd",
        "social",
        Chain.PRD,
    )


def test_environment_supplies_a_field_missing_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, 'node_id = "tax-yrd"\nchain = "yrd"\n')
    with pytest.raises(ConfigurationError, match="department"):
        load_settings(NodeSettings, path)
    monkeypatch.setenv("CREDITSHARE_NODE_DEPARTMENT", "tax")
    assert load_settings(NodeSettings, path).department == "tax"


def test_invalid_environment_value_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITSHARE_NODE_MAX_CONCURRENT_REQUESTS", "0")
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML))
    assert "max_concurrent_requests" in message


def test_environment_department_is_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITSHARE_NODE_DEPARTMENT", "finance")
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML))
    assert "unknown department 'finance'" in message


def test_unknown_department_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE_TOML.replace('department = "tax"', 'department = "finance"'))
    message = _config_error(NodeSettings, path)
    assert str(path) in message
    assert "department" in message
    assert "unknown department 'finance'" in message
    assert "tax, market, social, court, utility" in message


def test_weight_naming_unknown_feature_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE_TOML + "headcount_log10 = -0.2\n")
    message = _config_error(NodeSettings, path)
    assert str(path) in message
    assert "'sme-scorecard-v1'" in message
    assert "unknown feature(s) headcount_log10" in message
    assert "tax features are tax_arrears_months, tax_grade_risk, tax_paid_log10" in message


def test_weights_of_another_department_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, NODE_TOML.replace('department = "tax"', 'department = "court"'))
    message = _config_error(NodeSettings, path)
    assert "tax_arrears_months, tax_grade_risk, tax_paid_log10" in message
    assert "court features are" in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = _config_error(NodeSettings, path)
    assert "not found" in message
    assert str(path) in message


@pytest.mark.parametrize(
    "text",
    [
        'node_id = "tax-yrd"\ndepartment = tax\n',
        'node_id = "tax-yrd"\nnode_id = "again"\n',
        "[models\n",
        'listen = "unterminated\n',
    ],
)
def test_invalid_toml_is_refused(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    message = _config_error(NodeSettings, path)
    assert "not valid TOML" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ('node_id = "tax-yrd"', 'node_id = "Tax YRD"', "node_id"),
        ('node_id = "tax-yrd"', 'node_id = ""', "node_id"),
        ('node_id = "tax-yrd"', "", "node_id"),
        ('chain = "yrd"', 'chain = "north"', "chain"),
        ('chain = "yrd"', "", "chain"),
        ('listen = "127.0.0.1:6001"', "max_concurrent_requests = 10001", "max_concurrent_requests"),
        ('listen = "127.0.0.1:6001"', 'colour = "blue"', "colour"),
        ("tax_grade_risk = 0.35", 'tax_grade_risk = "high"', "tax_grade_risk"),
    ],
)
def test_invalid_node_values_name_the_field(
    tmp_path: Path, replace: str, by: str, field: str
) -> None:
    assert replace in NODE_TOML
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML.replace(replace, by)))
    assert "invalid configuration" in message
    assert field in message


# --------------------------------------------------------------------------- coordinator


def test_coordinator_settings_from_toml(tmp_path: Path) -> None:
    settings = load_settings(CoordinatorSettings, _write(tmp_path, COORDINATOR_TOML))
    assert settings.host == "192.0.2.10"
    assert settings.port == 8100
    assert settings.node_deadline_seconds == 2.5
    assert settings.scale == 1000
    assert [n.id for n in settings.nodes] == ["tax-yrd", "court-prd"]
    assert settings.nodes[1] == NodeEntry(
        id="court-prd", chain=Chain.PRD, department="court", address="127.0.0.1:6002"
    )
    assert len(settings.models) == 1
    model = settings.models[0]
    assert isinstance(model, ModelEntry)
    assert model.intercept == -1.0
    assert model.score_scale == ScoreScale(base_score=500.0, minimum=100.0, maximum=800.0)
    assert model.score_scale.base_odds == 50.0
    assert model.score_scale.points_to_double_odds == 40.0


def test_coordinator_defaults() -> None:
    settings = load_settings(CoordinatorSettings)
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.nodes == []
    assert settings.models == []
    assert settings.scale == 10**9


def test_coordinator_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITSHARE_COORDINATOR_PORT", "9100")
    settings = load_settings(CoordinatorSettings, _write(tmp_path, COORDINATOR_TOML))
    assert settings.port == 9100
    assert settings.host == "192.0.2.10"


def test_node_environment_does_not_leak_into_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITSHARE_NODE_PORT", "1")
    settings = load_settings(CoordinatorSettings, _write(tmp_path, COORDINATOR_TOML))
    assert settings.port == 8100


def test_duplicate_node_ids_are_refused(tmp_path: Path) -> None:
    text = COORDINATOR_TOML.replace('id = "court-prd"', 'id = "tax-yrd"')
    message = _config_error(CoordinatorSettings, _write(tmp_path, text))
    assert "duplicate node id(s): tax-yrd" in message


def test_duplicate_model_ids_are_refused(tmp_path: Path) -> None:
    text = COORDINATOR_TOML + '\n[[models]]\nid = "sme-scorecard-v1"\n'
    message = _config_error(CoordinatorSettings, _write(tmp_path, text))
    assert "duplicate model id(s): sme-scorecard-v1" in message


def test_duplicate_node_ids_refused_on_direct_construction() -> None:
    node = {"id": "a", "chain": "yrd", "department": "tax", "address": "h:1"}
    with pytest.raises(ValidationError, match="duplicate node id"):
        CoordinatorSettings(nodes=[node, dict(node, address="h:2")])


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("port = 8100", "port = 70000", "port"),
        ("scale = 1000", f"scale = {MAX_SCALE + 1}", "scale"),
        ("scale = 1000", "scale = 0", "scale"),
        ("node_deadline_seconds = 2.5", "node_deadline_seconds = 0", "node_deadline_seconds"),
        ('chain = "prd"', 'chain = "moon"', "chain"),
        ('address = "127.0.0.1:6002"', "", "address"),
    ],
)
def test_invalid_coordinator_values_name_the_field(
    tmp_path: Path, replace: str, by: str, field: str
) -> None:
    assert replace in COORDINATOR_TOML
    text = COORDINATOR_TOML.replace(replace, by)
    message = _config_error(CoordinatorSettings, _write(tmp_path, text))
    assert field in message


@pytest.mark.parametrize(("minimum", "maximum"), [(900.0, 300.0), (600.0, 600.0)])
def test_score_scale_minimum_must_be_below_maximum(minimum: float, maximum: float) -> None:
    with pytest.raises(ValidationError, match="minimum must be below its maximum"):
        ScoreScale(minimum=minimum, maximum=maximum)


def test_score_scale_out_of_order_in_file_is_refused(tmp_path: Path) -> None:
    text = COORDINATOR_TOML.replace("minimum = 100.0", "minimum = 800.0")
    message = _config_error(CoordinatorSettings, _write(tmp_path, text))
    assert "minimum must be below its maximum" in message
    assert "score_scale" in message


@pytest.mark.parametrize("field", ["base_odds", "points_to_double_odds"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_score_scale_needs_positive_odds_and_pdo(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        ScoreScale.model_validate({field: value})


def test_default_score_scale() -> None:
    scale = ScoreScale()
    assert (scale.base_score, scale.base_odds, scale.points_to_double_odds) == (600.0, 50.0, 40.0)
    assert (scale.minimum, scale.maximum) == (300.0, 900.0)


def test_node_without_tls_or_explicit_insecure_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDITSHARE_NODE_ALLOW_INSECURE")
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML))
    assert "allow_insecure" in message and "tls" in message


def test_coordinator_without_tls_for_a_chain_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDITSHARE_COORDINATOR_ALLOW_INSECURE")
    message = _config_error(CoordinatorSettings, _write(tmp_path, COORDINATOR_TOML))
    assert "prd, yrd" in message


def test_node_log_key_must_be_an_ed25519_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITSHARE_NODE_LOG_PUBLIC_KEY", "AAAA")
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML))
    assert "log_public_key" in message and "32 bytes" in message


def test_insecure_node_without_a_credential_ca_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without TLS there is no chain CA file: a node must be told which CA certifies the
    requesters and enterprises whose signatures it checks, or it could check nothing."""
    monkeypatch.delenv("CREDITSHARE_NODE_CREDENTIAL_CA")
    message = _config_error(NodeSettings, _write(tmp_path, NODE_TOML))
    assert "credential_ca" in message


def test_credential_ca_defaults_to_the_tls_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDITSHARE_NODE_CREDENTIAL_CA")
    files = {name: tmp_path / name for name in ("ca.crt", "tls.crt", "tls.key")}
    for path in files.values():
        path.write_text("placeholder: only the paths are checked here\n")
    settings = load_settings(
        NodeSettings,
        _write(tmp_path, NODE_TOML),
        tls={"ca": files["ca.crt"], "cert": files["tls.crt"], "key": files["tls.key"]},
    )
    assert settings.credential_ca_file == files["ca.crt"]
