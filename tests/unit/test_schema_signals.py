"""``[[signals]]`` in department schemas: which column raises which monitoring signal, and
every way an entry is refused (file, entry and key named, like every schema error)."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.departments import DEPARTMENTS, SchemaError, SignalSpec, parse_schema
from creditshare.monitoring import COLUMN_SIGNALS, SIGNAL_RULES, Rule, Severity, Signal

BASE = textwrap.dedent(
    """
    id = "courts2"
    display_name = "Courts, again"

    [[columns]]
    name = "judgments"
    type = "integer"
    min = 0

    [[columns]]
    name = "listed"
    type = "boolean"

    [[columns]]
    name = "grade"
    type = "category"
    levels = ["A", "B", "C"]

    [[columns]]
    name = "staff"
    type = "number"
    min = 0

    [[columns]]
    name = "opened_on"
    type = "date"

    [[indicators]]
    name = "judgments_band"
    column = "judgments"
    bounds = [1, 3]
    bands = ["none", "1–2", "3 or more"]

    [[indicators]]
    name = "judgments_coarse"
    column = "judgments"
    bounds = [1]
    bands = ["none", "some"]

    [[indicators]]
    name = "listed"
    column = "listed"

    [[indicators]]
    name = "grade"
    column = "grade"
    """
)


def _with(signals: str) -> str:
    return BASE + "\n" + textwrap.dedent(signals)


def test_signals_load_with_defaults_filled() -> None:
    department = parse_schema(
        _with(
            """
            [[signals]]
            type = "court_judgment"
            column = "judgments"
            indicator = "judgments_coarse"

            [[signals]]
            type = "dishonest_debtor"
            column = "listed"
            severity = "medium"

            [[signals]]
            type = "tax_downgrade"
            column = "grade"

            [[signals]]
            type = "headcount_drop"
            column = "staff"
            """
        ),
        "courts2.toml",
    )
    assert department.signals == (
        SignalSpec(
            Signal.COURT_JUDGMENT, "judgments", "judgments_coarse", Severity.HIGH, Rule.INCREASE
        ),
        # The column's one indicator by default; a severity of the department's choosing.
        SignalSpec(Signal.DISHONEST_DEBTOR, "listed", "listed", Severity.MEDIUM, Rule.BECOMES_TRUE),
        SignalSpec(Signal.TAX_DOWNGRADE, "grade", "grade", Severity.MEDIUM, Rule.DOWNGRADE),
        # No indicator on the column: events carry no values.
        SignalSpec(Signal.HEADCOUNT_DROP, "staff", "", Severity.MEDIUM, Rule.DROP_PERCENT),
    )


def test_two_indicators_on_a_column_and_none_chosen_shows_no_values() -> None:
    department = parse_schema(
        _with('[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\n'), "x.toml"
    )
    assert department.signals[0].indicator == ""


def test_a_schema_without_signals_raises_none() -> None:
    assert parse_schema(BASE, "x.toml").signals == ()


@pytest.mark.parametrize(
    ("signals", "where", "reason"),
    [
        (
            '[[signals]]\ntype = "court_ruling"\ncolumn = "judgments"\n',
            'signals[0] (type "court_ruling").type',
            "unknown signal type 'court_ruling' (known: court_judgment, dishonest_debtor",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgement"\n',
            'signals[0] (type "court_judgment").column',
            "no column 'judgement' (columns: judgments, listed, grade, staff, opened_on)",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "listed"\n',
            'signals[0] (type "court_judgment").column',
            "court_judgment (increase) watches integer or number columns; 'listed' is boolean",
        ),
        (
            '[[signals]]\ntype = "dishonest_debtor"\ncolumn = "judgments"\n',
            'signals[0] (type "dishonest_debtor").column',
            "watches boolean columns; 'judgments' is integer",
        ),
        (
            '[[signals]]\ntype = "tax_downgrade"\ncolumn = "opened_on"\n',
            'signals[0] (type "tax_downgrade").column',
            "watches category columns; 'opened_on' is date",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\nindicator = "listed"\n',
            'signals[0] (type "court_judgment").indicator',
            "no indicator 'listed' on column 'judgments' (its indicators: judgments_band, "
            "judgments_coarse)",
        ),
        (
            '[[signals]]\ntype = "headcount_drop"\ncolumn = "staff"\nindicator = "staff_band"\n',
            'signals[0] (type "headcount_drop").indicator',
            "(its indicators: none)",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\n\n'
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\n',
            'signals[1] (type "court_judgment").type',
            "'court_judgment' is declared twice (first at signals[0])",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\nseverity = "severe"\n',
            'signals[0] (type "court_judgment").severity',
            "must be one of low, medium, high, not 'severe'",
        ),
        (
            '[[signals]]\ntype = "court_judgment"\ncolumn = "judgments"\nthreshold = 2\n',
            "signals[0].threshold",
            "unknown key",
        ),
        ('[[signals]]\ntype = "court_judgment"\n', "signals[0].column", "this key is required"),
        (
            '[[signals]]\ntype = 3\ncolumn = "judgments"\n',
            "signals[0].type",
            "must be a string in quotes, not the integer 3",
        ),
    ],
)
def test_bad_signals_are_refused_naming_file_entry_and_key(
    signals: str, where: str, reason: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_schema(_with(signals), "courts2.toml")
    message = str(caught.value)
    assert message.startswith(f"courts2.toml: {where}: "), message
    assert reason in message, message


def test_the_builtins_declare_the_signals_of_the_contract() -> None:
    declared = {
        d.id: {(s.signal.value, s.column, s.indicator) for s in d.signals}
        for d in DEPARTMENTS.values()
    }
    assert declared == {
        "court": {
            ("court_judgment", "judgments_as_defendant", "judgments_band"),
            ("dishonest_debtor", "dishonest_debtor", "dishonest_debtor"),
        },
        "market": {
            ("administrative_penalty", "administrative_penalties", "penalties_band"),
            ("abnormal_operation", "abnormal_operations", "abnormal_operations"),
        },
        "tax": {
            ("tax_downgrade", "tax_credit_grade", "tax_credit_grade"),
            ("tax_arrears", "months_in_arrears", "months_in_arrears_band"),
        },
        "social": {("headcount_drop", "insured_headcount", "headcount_band")},
        "utility": {("utility_arrears", "late_payments", "late_payments_band")},
    }
    # Every signal type is raised by some built-in department, at its default severity.
    signals = [s for d in DEPARTMENTS.values() for s in d.signals]
    assert {s.signal for s in signals} == set(COLUMN_SIGNALS)
    assert all(s.severity is SIGNAL_RULES[s.signal].severity for s in signals)
    # Tax grades are listed best to worst, which is what a downgrade rule reads.
    assert DEPARTMENTS["tax"].fields[1].levels == ("A", "B", "M", "C", "D")


def test_schema_show_json_and_reference_include_the_signals() -> None:
    result = CliRunner().invoke(app, ["node", "schema", "show", "court", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["signals"] == [
        {
            "type": "court_judgment",
            "column": "judgments_as_defendant",
            "indicator": "judgments_band",
            "severity": "high",
            "rule": "increase",
        },
        {
            "type": "dishonest_debtor",
            "column": "dishonest_debtor",
            "indicator": "dishonest_debtor",
            "severity": "high",
            "rule": "becomes_true",
        },
    ]
    table = CliRunner().invoke(app, ["node", "schema", "show", "social"]).output
    assert "| `headcount_drop` | `insured_headcount` | drop_percent | medium " in table
