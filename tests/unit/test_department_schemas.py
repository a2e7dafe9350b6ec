"""Department schemas in TOML: what a steward can declare, and every way a schema is refused.

Each refusal names the file and the key, so the person who wrote it can fix it without
reading our code; a schema that loads behaves exactly as declared.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.departments import (
    DEPARTMENTS,
    SchemaError,
    builtin_schema_text,
    domain,
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
    standardised = {f.name: f.clipped for f in customs.features}
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
        (
            _replace("levels = [", "levles = ["),
            'columns[2] (name "trade_mode").levles',
            "unknown key",
        ),
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


# --- a steward who makes every mistake, an attacker who writes the file ------------------

#: A schema with one column of each type, each line a place to put a wrong value.
EVERY_TYPE = textwrap.dedent(
    """
    id = "probe"
    display_name = "Probe"

    [[columns]]
    name = "amount"
    type = "number"
    min = 0
    max = 1e9
    missing = "default"
    default = 0

    [[columns]]
    name = "count"
    type = "integer"
    min = 0
    max = 1000

    [[columns]]
    name = "grade"
    type = "category"
    levels = ["A", "B", "C"]
    missing = "default"
    default = "A"

    [[columns]]
    name = "flag"
    type = "boolean"
    missing = "default"
    default = false

    [[columns]]
    name = "since"
    type = "date"
    min = 1949-10-01
    max = 2100-01-01
    missing = "default"
    default = 2000-01-01

    [[features]]
    name = "amount_log"
    column = "amount"
    transform = "log10p1"
    scale = 2.0
    floor = 0
    cap = 18

    [[features]]
    name = "grade_risk"
    column = "grade"
    encoding = "map"
    values = { A = 0, B = 1, C = 3 }

    [[features]]
    name = "since_year"
    column = "since"
    transform = "year"

    [[indicators]]
    name = "amount_band"
    column = "amount"
    bounds = [1e3, 1e6]
    bands = ["small", "medium", "large"]

    [[signals]]
    type = "court_judgment"
    column = "amount"
    severity = "high"
    """
)

#: TOML values of every type, and the ones Python reads as something else (true is 1).
WRONG_VALUES = [
    "true",
    "false",
    '"5"',
    '""',
    "inf",
    "-inf",
    "nan",
    "1e308",
    "-1e308",
    "1" + "0" * 30,
    "1" + "0" * 5000,
    "0",
    "-1",
    "0.5",
    "1979-05-27",
    "1979-05-27T07:32:00",
    "07:32:00",
    "[1, 2]",
    "[]",
    '["a", "a"]',
    "{ a = 1 }",
    "{}",
    '"\\u0000"',
    '"a\\nb"',
    '"' + "x" * 5000 + '"',
    "[" * 600 + "]" * 600,
]


def _assignments(text: str) -> list[tuple[int, str]]:
    lines = text.splitlines()
    return [(k, line.split(" = ")[0]) for k, line in enumerate(lines) if " = " in line]


def _refusal(text: str) -> str | None:
    """None if the schema loads; else its one message, checked for shape."""
    try:
        parse_schema(text, "probe.toml")
    except SchemaError as exc:
        message = str(exc)
        assert message.startswith("probe.toml: "), message
        assert "\n" not in message and len(message) < 600, message
        assert "pydantic" not in message and "Traceback" not in message, message
        return message
    return None


@pytest.mark.parametrize("wrong", WRONG_VALUES)
def test_any_value_of_any_type_under_any_key_is_loaded_or_refused_by_key(wrong: str) -> None:
    """The class of type confusion: every key of a schema with every TOML type (and the
    values Python would coerce: true as 1, "5" as 5, inf, 5000-digit integers, nesting
    600 deep) either loads as a valid schema or is refused naming the file and the key;
    nothing else escapes (no KeyError, TypeError, OverflowError, RecursionError)."""
    lines = EVERY_TYPE.splitlines()
    for k, key in _assignments(EVERY_TYPE):
        text = "\n".join([*lines[:k], f"{key} = {wrong}", *lines[k + 1 :]])
        message = _refusal(text)
        if (
            message is not None
            and "not valid TOML" not in message
            and "TOML document" not in message
        ):
            assert key in message or "columns[" in message or "features[" in message, (key, message)


def test_the_probe_schema_itself_loads() -> None:
    assert _refusal(EVERY_TYPE) is None


def _probe(old: str, new: str) -> str:
    assert old in EVERY_TYPE, old
    return EVERY_TYPE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        # A TOML boolean is not a number (Python would read true as 1).
        (_probe("min = 0\nmax = 1e9", "min = true\nmax = 1e9"), 'amount").min', "boolean true"),
        (_probe("min = 0\nmax = 1000", 'min = "0"\nmax = 1000'), 'count").min', "string '0'"),
        (_probe("max = 1e9", "max = inf"), '"amount").max', "finite number within ±1e15"),
        (_probe("max = 1e9", "max = 1e16"), '"amount").max', "within ±1e15"),
        (_probe("max = 1e9", "max = " + "9" * 40), '"amount").max', "within ±1e15"),
        (_probe("scale = 2.0", "scale = true"), '"amount_log").scale', "boolean true"),
        (_probe("scale = 2.0", "scale = 0"), '"amount_log").scale', "always 0"),
        (_probe("cap = 18", 'cap = "18"'), '"amount_log").cap', "string '18'"),
        (_probe("C = 3 }", "C = true }"), '"grade_risk").values.C', "boolean true"),
        (_probe("C = 3 }", "C = 1e300 }"), '"grade_risk").values', "within ±1e15"),
        (_probe("A = 0, B = 1, C = 3", "A = 1, B = 1, C = 1"), "values", "constant"),
        (_probe("bounds = [1e3, 1e6]", "bounds = [true, 1e6]"), "bounds[0]", "boolean"),
        (_probe("bounds = [1e3, 1e6]", 'bounds = ["1e3", 1e6]'), "bounds[0]", "string"),
        (_probe('"medium"', '"small"'), "bands", "same label"),
        (_probe('"medium"', '"med\\nium"'), "bands[1]", "control character"),
        (_probe("levels = [", "levels = { a = 1 }\nx = ["), "levels", "a list"),
        (_probe('levels = ["A", "B", "C"]', 'levels = ["A", "b", "a"]'), "levels", "letter case"),
        (_probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "Ｃ", "c"]'), "levels", "width"),
        (_probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "C,D"]'), "levels[2]", "comma"),
        (
            _probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "\\"C\\""]'),
            "levels[2]",
            "quote",
        ),
        (_probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "C "]'), "levels[2]", "space"),
        (
            _probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "C\\u200b"]'),
            "levels[2]",
            "invisible",
        ),
        (
            _probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "C\\u007f"]'),
            "levels[2]",
            "control",
        ),
        (
            _probe('levels = ["A", "B", "C"]', 'levels = ["A", "B", "C\\tD"]'),
            "levels[2]",
            "control",
        ),
        (_probe("min = 1949-10-01", "min = 1949-10-01T00:00:00"), '"since").min', "date-time"),
        (_probe("min = 1949-10-01", 'min = "1949-10-01"'), '"since").min', "TOML date"),
        (_probe("default = 2000-01-01", "default = 2000-01-01T08:00:00"), "default", "date-time"),
        (_probe("default = 2000-01-01", 'default = "2000-02-30"'), "default", "that exists"),
        (_probe("default = 2000-01-01", "default = 1800-01-01"), "default", "at least 1949-10-01"),
        (_probe("default = false", "default = 2"), '"flag").default', "integer 2"),
        (_probe("default = false", 'default = "yes"'), '"flag").default', "string 'yes'"),
        (_probe("default = false", "default = 1.0"), '"flag").default', "float 1.0"),
        (_probe('default = "A"', "default = 1"), '"grade").default', "one of its levels"),
        (_probe("default = 0\n", "default = true\n"), '"amount").default', "boolean true"),
        (_probe("default = 0\n", 'default = "0"\n'), '"amount").default', "string '0'"),
        (_probe("default = 0\n", "default = -1\n"), '"amount").default', "at least 0"),
        (_probe("default = 0\n", "default = nan\n"), '"amount").default', "within ±1e15"),
        (_probe('name = "grade_risk"', 'name = "amount_log"'), "features[1]", "declared twice"),
        (_probe('display_name = "Probe"', 'display_name = "Pro\\nbe"'), "display_name", "one line"),
        (_probe('name = "count"', 'name = "Count"'), "columns[1]", "lower-case letters"),
        (
            _probe('name = "count"', 'name = "c\\nount"'),
            'columns[1] (name "c\\nount")',
            "not a name",
        ),
        (_probe('type = "integer"', 'type = "int"'), '"count").type', "'number', 'integer'"),
        (_probe('type = "integer"', "type = 1"), '"count").type', "integer 1"),
        # A feature whose value could overflow: no bounds and a scale.
        (
            _probe("min = 0\nmax = 1000\n", "min = 0\n")
            + '\n[[features]]\nname = "count_x"\ncolumn = "count"\nscale = 1e3\n',
            '"count_x")',
            "floor and cap",
        ),
        # A feature that never varies.
        (_probe("floor = 0\ncap = 18", "floor = 20\ncap = 30"), '"amount_log")', "always 20"),
    ],
)
def test_wrong_values_are_refused_by_key_with_a_reason(text: str, where: str, reason: str) -> None:
    message = _refusal(text)
    assert message is not None
    assert where in message and reason in message, message


def test_a_name_in_a_message_is_one_line_and_short() -> None:
    many = "".join(f'\n[[columns]]\nname = "c{k}"\ntype = "number"\n' for k in range(300))
    text = EVERY_TYPE.replace('column = "amount"\ntransform', 'column = "nope"\ntransform')
    message = _refusal(text + many)
    assert message is not None and "… (305 in all)" in message


@pytest.mark.parametrize(
    ("default", "stored"),
    [
        ("2000-01-01", "2000-01-01"),  # a TOML date
        ('"2000-01-01"', "2000-01-01"),  # or the string a cell would hold
    ],
)
def test_a_date_default_is_a_toml_date_or_its_iso_string(default: str, stored: str) -> None:
    text = _probe("default = 2000-01-01", f"default = {default}")
    since = next(f for f in parse_schema(text, "p.toml").fields if f.name == "since")
    assert since.default == stored and since.parse("") == stored


@pytest.mark.parametrize(("default", "stored"), [("true", 1), ("false", 0), ("1", 1), ("0", 0)])
def test_a_boolean_default_is_a_toml_boolean_or_1_or_0(default: str, stored: int) -> None:
    text = _probe("default = false", f"default = {default}")
    flag = next(f for f in parse_schema(text, "p.toml").fields if f.name == "flag")
    assert flag.default == stored


def test_a_category_default_is_stored_as_its_canonical_level() -> None:
    text = _probe('default = "A"', 'default = "b"')
    grade = next(f for f in parse_schema(text, "p.toml").fields if f.name == "grade")
    assert grade.default == "B"


def test_a_map_keyed_in_another_letter_case_maps_the_levels() -> None:
    """Map keys match levels as cells do; a key matching no level, or two keys one
    level, is refused."""
    text = _probe("values = { A = 0, B = 1, C = 3 }", "values = { a = 0, b = 1, c = 3 }")
    probe = parse_schema(text, "p.toml")
    risk = next(f for f in probe.features if f.name == "grade_risk")
    assert risk.derive({"grade": "C"}) == 3.0 and risk.bounds == (0.0, 3.0)
    twice = _probe("values = { A = 0, B = 1, C = 3 }", "values = { A = 0, a = 0, B = 1, C = 3 }")
    assert "mapped twice" in (_refusal(twice) or "")
    unknown = _probe("values = { A = 0, B = 1, C = 3 }", "values = { A = 0, B = 1, C = 3, D = 4 }")
    assert "unknown level(s) 'D'" in (_refusal(unknown) or "")


def test_one_hot_names_cannot_collide() -> None:
    """A one-hot feature "mode" is "mode=<level>"; plain names hold no "=", declared names
    are unique, and levels differ after folding, so no two features share a name."""
    text = _probe(
        '[[features]]\nname = "since_year"',
        '[[features]]\nname = "grade"\ncolumn = "grade"\n\n[[features]]\nname = "since_year"',
    )
    names = [f.name for f in parse_schema(text, "p.toml").features]
    assert [n for n in names if n.startswith("grade=")] == ["grade=A", "grade=B", "grade=C"]
    assert len(names) == len(set(names))
    clash = _probe('name = "since_year"', 'name = "grade_risk"')
    assert "declared twice" in (_refusal(clash) or "")
    single = (
        _probe('levels = ["A", "B", "C"]', 'levels = ["A"]')
        .replace("values = { A = 0, B = 1, C = 3 }", "")
        .replace('encoding = "map"\n', "")
    )
    assert "always be 1" in (_refusal(single) or "")


def test_a_date_band_bound_may_be_a_toml_date() -> None:
    text = EVERY_TYPE + textwrap.dedent(
        """
        [[indicators]]
        name = "since_band"
        column = "since"
        bounds = [2000-01-01, 2015]
        bands = ["before 2000", "2000–2014", "2015 on"]
        """
    )
    probe = parse_schema(text, "p.toml")
    since = next(i for i in probe.indicators if i.name == "since_band")
    assert [since.derive({"since": d}) for d in ("1999-12-31", "2000-01-01", "2015-01-01")] == [
        0.0,
        1.0,
        2.0,
    ]


def test_schema_files_that_are_not_schemas_are_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * 2_000_000)
    with pytest.raises(SchemaError, match=r"huge\.toml: larger than"):
        load_schema(huge)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SchemaError, match=r"binary\.toml: cannot read"):
        load_schema(binary)
    with pytest.raises(SchemaError, match=r"cannot read"):
        load_schema(tmp_path)


# --- cells: strict where Python is lax ---------------------------------------------------


def _fields() -> dict[str, Any]:
    return {f.name: f for f in parse_schema(EVERY_TYPE, "p.toml").fields}


@pytest.mark.parametrize(
    ("column", "text", "stored"),
    [
        ("amount", "1234.5", 1234.5),
        ("amount", " 5 ", 5.0),  # CSV padding (spaces, tabs) is trimmed
        ("amount", "\t5", 5.0),
        ("amount", "1.5E+06", 1.5e6),  # what spreadsheets write
        ("amount", "1e3", 1000.0),
        ("amount", "0.000", 0.0),
        ("amount", "-0", -0.0),
        ("amount", "0e-400", 0.0),  # zero written small is still zero
        ("count", "0", 0),
        ("count", "1000", 1000),
        ("grade", "ｂ", "B"),  # full-width letters fold like letter case
        ("grade", " c ", "C"),
        ("flag", "YES", 1),
        ("since", "2100-01-01", "2100-01-01"),
    ],
)
def test_cells_written_on_purpose_are_accepted(column: str, text: str, stored: object) -> None:
    assert _fields()[column].parse(text) == stored


def test_the_last_date_a_cell_holds_is_a_finite_year() -> None:
    """9999-12-31 has no next 1 January: its decimal year once raised "year 10000 is out
    of range" from the importer, a date bound in a schema, and the reference."""
    text = _probe("max = 2100-01-01\n", "max = 9999-12-31\n")
    probe = parse_schema(text, "p.toml")
    since = next(f for f in probe.fields if f.name == "since")
    assert since.parse("9999-12-31") == "9999-12-31"
    year = probe.feature_values({"amount": 0.0, "grade": "A", "since": "9999-12-31"})["since_year"]
    assert 9999.99 < year < 10000
    assert "9999-12-31" in domain(since)


@pytest.mark.parametrize(
    ("column", "text", "reason"),
    [
        ("amount", "1_000", "digits 0-9"),  # float() accepts underscores
        ("amount", "+5", "digits 0-9"),  # a leading + ("+86 ...") is not a number we store
        ("amount", "0x10", "digits 0-9"),
        ("amount", "１２", "digits 0-9"),  # full-width digits: float() accepts them
        ("amount", "٣", "digits 0-9"),  # Arabic-Indic three
        ("amount", "1,000", "digits 0-9"),
        ("amount", "007", "leading zeros"),
        ("amount", ".5", "digits 0-9"),
        ("amount", "5.", "digits 0-9"),
        ("amount", "inf", "must be finite"),
        ("amount", "nan", "must be finite"),
        ("amount", "-Infinity", "must be finite"),
        ("amount", "\u30005", "digits 0-9"),  # an ideographic space is not padding
        ("amount", "5\u00a0", "digits 0-9"),
        ("amount", "1e-400", "too small to store"),  # float() gives 0.0
        ("amount", "1e-310", "too small to store"),  # a subnormal: precision lost
        ("amount", "1e400", "must be finite"),
        ("amount", "1e300", "at most 1e+09"),
        ("amount", "2e9", "at most 1e+09"),
        ("count", "007", "no leading zeros"),
        ("count", "+5", "no + or _"),
        ("count", "1_0", "no + or _"),
        ("count", "０１", "digits 0-9"),  # int() accepts full-width digits
        ("count", "1e3", "whole number"),
        ("count", "3.0", "whole number"),
        ("count", "-0x1", "whole number"),
        ("count", "9" * 5000, "whole number"),  # int() would refuse with its own message
        ("since", "2024-02-30", "that exists"),
        ("since", "２０２４-01-01", "YYYY-MM-DD"),
        ("since", "2024-1-1", "YYYY-MM-DD"),
        ("since", "20240101", "YYYY-MM-DD"),
        ("since", "2024-01-01T00:00", "YYYY-MM-DD"),
        ("since", "2100-01-02", "at most 2100-01-01"),
        ("grade", "D", "one of A, B, C"),
        ("grade", "A\u200b", "one of A, B, C"),
        ("flag", "2", "0 or 1"),
    ],
)
def test_cells_python_would_accept_but_a_steward_did_not_mean(
    column: str, text: str, reason: str
) -> None:
    with pytest.raises(ValueError) as caught:
        _fields()[column].parse(text)
    message = str(caught.value)
    assert message.startswith(column) and reason in message, message


def test_a_huge_cell_makes_a_short_message() -> None:
    with pytest.raises(ValueError) as caught:
        _fields()["grade"].parse("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_an_integer_column_without_bounds_stays_within_the_number_limit() -> None:
    text = _probe("min = 0\nmax = 1000\n", "")
    count = next(f for f in parse_schema(text, "p.toml").fields if f.name == "count")
    assert count.parse("-1000000000000000") == -(10**15)
    for beyond in ("1000000000000001", "-" + "9" * 400):
        with pytest.raises(ValueError, match="within ±1e15"):
            count.parse(beyond)


@pytest.mark.parametrize(
    ("record_change", "value"),
    [
        ({"grade": "D"}, "'D'"),  # a level since removed
        ({"amount": -5.0}, "-5.0"),  # a bound since tightened
        ({"amount": "12"}, "'12'"),
        ({"since": "2024-13-01"}, "2024-13-01"),
        ({"flag": 2}, "'2'"),
    ],
)
def test_a_stored_record_the_schema_no_longer_accepts_is_named_not_a_key_error(
    record_change: dict[str, float | int | str], value: str
) -> None:
    """Records are checked when imported; one imported under another schema (a level
    renamed, a column added, a bound tightened) must not reach a query as a KeyError or
    a silently out-of-range feature: every derive says what the node must do. The error
    leaves the node (a gRPC status, a bank's coverage): it names the column, never the
    stored value, and maps to FAILED_PRECONDITION."""
    import grpc

    from creditshare.errors import StaleRecordError
    from creditshare.node import _service

    probe = parse_schema(
        EVERY_TYPE
        + '\n[[indicators]]\nname = "grade"\ncolumn = "grade"\n'
        + '\n[[indicators]]\nname = "flag"\ncolumn = "flag"\n'
        + '\n[[features]]\nname = "flag"\ncolumn = "flag"\n',
        "p.toml",
    )
    good: dict[str, float | int | str] = {
        "amount": 5.0,
        "count": 1,
        "grade": "B",
        "flag": 1,
        "since": "2000-01-01",
    }
    assert probe.feature_values(good) and probe.indicator_values(good)
    bad = good | record_change
    column = next(iter(record_change))
    stored = str(record_change[column])
    derived = [f for f in probe.features if f.column == column]
    derived += [i for i in probe.indicators if i.column == column]  # type: ignore[misc]
    assert derived
    for spec in derived:
        with pytest.raises(StaleRecordError, match="re-imported under its schema") as e:
            spec.derive(bad)
        message = str(e.value)
        assert f"for {column} " in message
        assert value not in message and stored not in message
        assert _service.status_for(e.value) == grpc.StatusCode.FAILED_PRECONDITION
    # A record without the column reads as the column's default when it has one
    # (missing = "default": a file without the column, or a record imported before the
    # schema added it); without a default it is stale, and named as such.
    missing = {k: v for k, v in good.items() if k != column}
    field = {f.name: f for f in probe.fields}[column]
    assert field.default is not None
    assert derived[0].derive(missing) == derived[0].derive(good | {column: field.default})
    strict = parse_schema(
        EVERY_TYPE.replace('missing = "default"\ndefault = 0\n', "", 1), "strict.toml"
    )
    amount_log = next(f for f in strict.features if f.column == "amount")
    with pytest.raises(StaleRecordError, match="holds no value for amount "):
        amount_log.derive({k: v for k, v in good.items() if k != "amount"})


def test_limits_the_coordinator_enforces_are_enforced_at_load() -> None:
    """A schema that loads must not make the coordinator refuse the node's catalogue at
    run time (the node would be silently unused), nor a shard of 30 000 one-hot weights."""
    from creditshare.consent import MAX_INDICATOR_NAME
    from creditshare.coordinator.relay import _channels
    from creditshare.departments import _toml, _toml_messages

    assert _toml.MAX_INDICATOR_TEXT == _channels.MAX_CATALOGUE_TEXT
    assert _toml.MAX_INDICATORS == _channels.MAX_NODE_INDICATORS
    assert _toml.MAX_BANDS == _channels.MAX_INDICATOR_BANDS
    assert _toml_messages.MAX_LABEL <= _channels.MAX_CATALOGUE_TEXT
    longest = "a" * MAX_INDICATOR_NAME
    assert _refusal(_probe('name = "amount_band"', f'name = "{longest}"')) is None
    assert "at most 48" in (_refusal(_probe('name = "amount_band"', f'name = "{longest}a"')) or "")
    long_column = _probe('name = "amount"\n', f'name = "amount"\ndescription = "{"x" * 300}"\n')
    message = _refusal(long_column) or ""
    assert 'indicators[0] (name "amount_band").description' in message and "300" in message
    assert (
        _refusal(
            long_column.replace(
                'name = "amount_band"', 'name = "amount_band"\ndescription = "banded"'
            )
        )
        is None
    )
    levels = ", ".join(f'"l{k}"' for k in range(60))
    wide = "".join(
        f'\n[[columns]]\nname = "c{k}"\ntype = "category"\nlevels = [{levels}]\n'
        f'\n[[features]]\nname = "c{k}"\ncolumn = "c{k}"\n'
        for k in range(20)
    )
    assert "1203 model features after one-hot expansion" in (_refusal(EVERY_TYPE + wide) or "")
