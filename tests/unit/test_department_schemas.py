"""Department schemas in TOML: what a steward can declare, and every way a schema is refused.

Each refusal names the file and the key, so the person who wrote it can fix it without
reading our code; a schema that loads behaves exactly as declared.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.departments import (
    DEPARTMENTS,
    SchemaError,
    builtin_schema_text,
    load_schema,
    parse_schema,
    reference_markdown,
    resolve_department,
)

REPO = Path(__file__).resolve().parents[2]

CUSTOMS = textwrap.dedent(
    """
    id = "customs"
    display_name = "Customs"
    description = "Import and export declarations."

    [[columns]]
    name = "export_value"
    type = "number"
    unit = "CNY"
    description = "exports in the last 12 months"
    min = 0
    max = 1e13

    [[columns]]
    name = "declarations"
    type = "integer"
    min = 0
    max = 100000
    missing = "default"
    default = 0

    [[columns]]
    name = "trade_mode"
    type = "category"
    levels = ["general", "processing", "bonded"]
    missing = "default"
    default = "general"

    [[columns]]
    name = "aeo_certified"
    type = "boolean"

    [[columns]]
    name = "registered_on"
    type = "date"
    min = 1949-10-01

    [[features]]
    name = "export_log10"
    column = "export_value"
    transform = "log10p1"

    [[features]]
    name = "declarations"
    column = "declarations"
    cap = 50

    [[features]]
    name = "mode"
    column = "trade_mode"

    [[features]]
    name = "mode_risk"
    column = "trade_mode"
    encoding = "map"
    values = { general = 0, processing = 1, bonded = 0.5 }

    [[features]]
    name = "aeo"
    column = "aeo_certified"

    [[features]]
    name = "registered_year"
    column = "registered_on"
    transform = "year"

    [[indicators]]
    name = "export_band"
    column = "export_value"
    bounds = [1e5, 1e6]
    bands = ["under 100k", "100k–1M", "1M or more"]

    [[indicators]]
    name = "trade_mode"
    column = "trade_mode"

    [[indicators]]
    name = "aeo"
    column = "aeo_certified"
    bands = ["not certified", "certified"]

    [[indicators]]
    name = "registered_band"
    column = "registered_on"
    bounds = [2000, 2015]
    bands = ["before 2000", "2000–2014", "2015 or later"]
    """
)


def test_a_schema_of_its_own_loads_and_behaves_as_declared() -> None:
    customs = parse_schema(CUSTOMS, "customs.toml")
    assert customs.columns == (
        "uscc",
        "export_value",
        "declarations",
        "trade_mode",
        "aeo_certified",
        "registered_on",
    )
    fields = {f.name: f for f in customs.fields}
    record = {
        "export_value": fields["export_value"].parse("99999"),
        "declarations": fields["declarations"].parse(""),  # missing → the default
        "trade_mode": fields["trade_mode"].parse(" PROCESSING "),  # case-insensitive
        "aeo_certified": fields["aeo_certified"].parse("yes"),
        "registered_on": fields["registered_on"].parse("2015-07-02"),
    }
    assert record["declarations"] == 0 and record["trade_mode"] == "processing"
    assert record["aeo_certified"] == 1 and record["registered_on"] == "2015-07-02"
    features = customs.feature_values(record)
    # One-hot expands to one 0/1 feature per level, named after it; none standardised.
    assert [name for name in features if name.startswith("mode=")] == [
        "mode=general",
        "mode=processing",
        "mode=bonded",
    ]
    assert (features["mode=processing"], features["mode=general"]) == (1.0, 0.0)
    assert features["mode_risk"] == 1.0
    assert features["export_log10"] == pytest.approx(5.0, abs=1e-4)
    assert features["registered_year"] == pytest.approx(2015.5, abs=0.01)
    standardised = {f.name: f.standardised for f in customs.features}
    assert standardised["export_log10"] and standardised["mode_risk"]
    assert not standardised["mode=general"] and not standardised["aeo"]
    assert customs.indicator_values(record) == {
        "export_band": 0.0,
        "trade_mode": 1.0,
        "aeo": 1.0,
        "registered_band": 2.0,
    }
    bands = {i.name: i.bands for i in customs.indicators}
    assert bands["trade_mode"] == ("general", "processing", "bonded")


@pytest.mark.parametrize(
    ("column", "text", "message"),
    [
        ("registered_on", "1949-09-30", "registered_on must be at least 1949-10-01"),
        ("registered_on", "2015-7-2", "registered_on must be a date YYYY-MM-DD"),
        ("registered_on", "2015-02-30", "registered_on must be a date YYYY-MM-DD"),
        ("trade_mode", "barter", "trade_mode must be one of general, processing, bonded"),
        ("aeo_certified", "maybe", "aeo_certified must be 0 or 1"),
        ("aeo_certified", "", "aeo_certified is empty"),
        ("declarations", "1" + "0" * 400, "declarations must be at most 100000"),
    ],
)
def test_cells_a_custom_schema_refuses(column: str, text: str, message: str) -> None:
    spec = next(f for f in parse_schema(CUSTOMS, "customs.toml").fields if f.name == column)
    with pytest.raises(ValueError, match=message):
        spec.parse(text)


def _replace(old: str, new: str) -> str:
    assert old in CUSTOMS, old
    return CUSTOMS.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("id = [", "", "not valid TOML"),
        (_replace('type = "integer"', 'type = "int"'), 'columns[1] (name "declarations").type', ""),
        (_replace("levels = [", "levles = ["), 'columns[2] (name "trade_mode").levles', "Extra"),
        (
            _replace('levels = ["general", "processing", "bonded"]', "levels = []"),
            'columns[2] (name "trade_mode")',
            "needs its levels",
        ),
        (
            _replace('"processing", "bonded"]', '"General", "bonded"]'),
            "levels",
            "more than letter case",
        ),
        (
            _replace("min = 0\nmax = 1e13", "min = 10\nmax = 1"),
            "columns[0]",
            "min is above",
        ),
        (_replace('default = "general"', 'default = "barter"'), "default", "must be one of"),
        (
            _replace('missing = "default"\ndefault = 0\n', 'missing = "default"\n'),
            "columns[1]",
            "needs a default",
        ),
        (_replace("min = 1949-10-01", "min = 1949"), "registered_on", "TOML date"),
        (
            _replace('column = "export_value"\ntransform', 'column = "exports"\ntransform'),
            "features[0].column",
            "no column 'exports'",
        ),
        (
            _replace(
                'name = "declarations"\ncolumn = "declarations"',
                'name = "aeo"\ncolumn = "declarations"',
            ),
            "features",
            "'aeo' is declared twice",
        ),
        (
            _replace(
                "values = { general = 0, processing = 1, bonded = 0.5 }",
                "values = { general = 0, processing = 1 }",
            ),
            "values",
            "no value for bonded",
        ),
        (
            _replace('column = "registered_on"\ntransform = "year"', 'column = "registered_on"'),
            "transform",
            'transform = "year"',
        ),
        (
            _replace('unit = "CNY"\ndescription = "exports in the last 12 months"\nmin = 0\n', ""),
            'features[0] (name "export_log10").transform',
            "cannot be negative (give export_value min = 0)",
        ),
        (
            _replace("bounds = [1e5, 1e6]\n", ""),
            'indicators[0] (name "export_band").bounds',
            "banks never see raw values",
        ),
        (_replace("bounds = [1e5, 1e6]", "bounds = [1e6, 1e5]"), "bounds", "strictly increasing"),
        (
            _replace('bands = ["under 100k", "100k–1M", "1M or more"]', 'bands = ["low", "high"]'),
            "bands",
            "2 bounds make 3 bands",
        ),
        (
            _replace(
                'name = "trade_mode"\ncolumn = "trade_mode"\n',
                'name = "record_present"\ncolumn = "trade_mode"\n',
            ),
            "name",
            "reserved",
        ),
        (
            _replace(
                '[[columns]]\nname = "export_value"',
                '[[columns]]\nname = "uscc"\ntype = "number"\n\n[[columns]]\nname = "export_value"',
            ),
            "columns",
            "implicit",
        ),
    ],
)
def test_bad_schemas_are_refused_naming_file_and_key(text: str, where: str, reason: str) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_schema(text, "customs.toml")
    message = str(caught.value)
    assert message.startswith("customs.toml: ")
    assert where in message and reason in message


def test_too_many_levels_for_one_hot_points_to_map() -> None:
    levels = ", ".join(f'"l{k}"' for k in range(65))
    text = _replace('levels = ["general", "processing", "bonded"]', f"levels = [{levels}]")
    text = text.replace('default = "general"', 'default = "l0"')
    with pytest.raises(SchemaError, match='encoding = "map"'):
        parse_schema(text, "customs.toml")


def test_builtins_are_schema_files_read_by_the_same_loader() -> None:
    for department_id, department in DEPARTMENTS.items():
        text = builtin_schema_text(department_id)
        again = parse_schema(text, "copy.toml")
        assert again.columns == department.columns
        assert [f.name for f in again.features] == [f.name for f in department.features]
        assert [(i.name, i.bands) for i in again.indicators] == [
            (i.name, i.bands) for i in department.indicators
        ]


def test_a_node_uses_its_own_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "customs.toml"
    path.write_text(CUSTOMS, encoding="utf-8")
    assert resolve_department(None, path).id == "customs"
    assert resolve_department("customs", path).id == "customs"
    with pytest.raises(ValueError, match="declares department 'customs', but department is 'tax'"):
        resolve_department("tax", path)
    assert resolve_department("tax", None).id == "tax"
    with pytest.raises(KeyError, match="unknown department 'customs'"):
        resolve_department("customs", None)


def test_node_settings_refuse_a_bad_schema_at_start_up(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from creditshare.node import NodeSettings

    bad = tmp_path / "bad.toml"
    bad.write_text(CUSTOMS.replace("bounds = [1e5, 1e6]\n", ""), encoding="utf-8")
    common = {
        "node_id": "yrd-customs",
        "chain": "yrd",
        "log_public_key": "A" * 43 + "=",
        "allow_insecure": True,
        "credential_ca": str(tmp_path / "ca.pem"),
    }
    with pytest.raises(ValidationError, match="banks never see raw values"):
        NodeSettings.model_validate({"schema_file": bad, **common})
    good = tmp_path / "customs.toml"
    good.write_text(CUSTOMS, encoding="utf-8")
    settings = NodeSettings.model_validate({"schema_file": good, **common})
    assert settings.department_schema.id == "customs"


def test_the_reference_page_is_generated_from_the_builtins() -> None:
    """docs/schema-reference.md is `creditshare node schema reference`'s output, unedited."""
    committed = (REPO / "docs" / "schema-reference.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(DEPARTMENTS.values()), (
        "regenerate: creditshare node schema reference > docs/schema-reference.md"
    )
    for department in DEPARTMENTS.values():
        for spec in department.fields:
            assert f"| `{spec.name}` | {spec.kind} |" in committed


def test_schema_check_cli_checks_a_schema_and_an_export(tmp_path: Path) -> None:
    schema = tmp_path / "customs.toml"
    schema.write_text(CUSTOMS, encoding="utf-8")
    from creditshare.identity import make_uscc

    good = tmp_path / "good.csv"
    good.write_text(
        "uscc,export_value,declarations,trade_mode,aeo_certified,registered_on\n"
        f"{make_uscc('9', '1', '310101', 'MA1FL8RX')},1000,,bonded,no,2001-05-01\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    result = runner.invoke(app, ["node", "schema", "check", str(schema), "--data", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 rows in 1 file(s) match" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace("bonded", "barter"), encoding="utf-8")
    result = runner.invoke(app, ["node", "schema", "check", str(schema), "--data", str(bad)])
    assert result.exit_code != 0
    assert "line 2" in str(result.exception) and "trade_mode must be one of" in str(
        result.exception
    )


def test_schema_show_cli_lists_columns_units_and_domains() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["node", "schema", "show", "tax", "--json"])
    assert result.exit_code == 0, result.output
    import json

    shown = json.loads(result.output)
    columns = {c["name"]: c for c in shown["columns"]}
    assert columns["annual_tax_paid"]["unit"] == "CNY"
    assert columns["tax_credit_grade"]["accepted"] == "A, B, M, C, D"
    assert columns["months_in_arrears"]["accepted"] == "whole number, 0 to 600"
    result = runner.invoke(app, ["node", "schema", "show", "tax", "--toml"])
    assert result.output == builtin_schema_text("tax")
    result = runner.invoke(app, ["node", "schema", "show", "taxes"])
    assert result.exit_code != 0 and "unknown department 'taxes'" in result.output


def test_load_schema_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"missing\.toml: cannot read"):
        load_schema(tmp_path / "missing.toml")
