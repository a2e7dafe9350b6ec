"""Human-readable references of department schemas: the tables a data steward checks
an export against, and the Markdown page generated from the built-ins.

Generated, never hand-edited: ``docs/schema-reference.md`` is this module's output for
the built-in schemas, and a test fails when the two differ.
"""

from __future__ import annotations

from collections.abc import Iterable

from creditshare.departments._schema import Department, FieldSpec, IndicatorSpec, _date_of

__all__ = ["domain", "reference_markdown", "schema_tables"]

_RULE4 = "|---|---|---|---|"


def _number(value: float) -> str:
    return f"{value:g}"


def domain(spec: FieldSpec) -> str:
    """The values a column accepts, as a steward would write them."""
    if spec.kind == "category":
        return ", ".join(spec.levels)
    if spec.kind == "boolean":
        return "0 or 1 (also true/false, yes/no)"
    show = _date_of if spec.kind == "date" else _number
    low = show(spec.minimum) if spec.minimum is not None else None
    high = show(spec.maximum) if spec.maximum is not None else None
    kind = {"number": "number", "integer": "whole number", "date": "date YYYY-MM-DD"}[spec.kind]
    if low is not None and high is not None:
        return f"{kind}, {low} to {high}"
    if low is not None:
        return f"{kind}, at least {low}"
    if high is not None:
        return f"{kind}, at most {high}"
    return kind


def _missing(spec: FieldSpec) -> str:
    if spec.missing == "default":
        return f"empty → {spec.default}"
    return "refused"


def _encoding(clipped: bool, kind: str, woe_min_rows: int = 0) -> str:
    if woe_min_rows:
        return (
            f"weight of evidence per job (levels under {woe_min_rows} rows pooled), "
            "standardised, clipped"
        )
    if not clipped:
        return ("0/1, " if kind == "boolean" else "") + "standardised (never clipped)"
    return "standardised, clipped"


def _bands(spec: IndicatorSpec) -> str:
    return " · ".join(spec.bands)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schema_tables(department: Department) -> str:
    """One department as Markdown: its columns, features and indicators."""
    lines = [
        f"## `{department.id}` — {_cell(department.display_name)}",
        "",
    ]
    if department.description:
        lines += [_cell(department.description), ""]
    lines += [
        f"Import file columns: `{','.join(department.columns)}` (`uscc`: the 18-character "
        "unified social credit code).",
        "",
        "| column | type | unit | accepted values | empty cell | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in department.fields:
        lines.append(
            f"| `{spec.name}` | {spec.kind} | {_cell(spec.unit) or '—'} | {_cell(domain(spec))} "
            f"| {_cell(_missing(spec))} | {_cell(spec.description)} |"
        )
    lines += ["", "| model feature | from column | training encoding | meaning |", _RULE4]
    for feature in department.features:
        lines.append(
            f"| `{_cell(feature.name)}` | `{feature.column}` "
            f"| {_encoding(feature.clipped, feature.kind, feature.woe_min_rows)} "
            f"| {_cell(feature.description)} |"
        )
    if department.indicators:
        lines += ["", "| indicator (banks see) | from column | bands | meaning |", _RULE4]
        for indicator in department.indicators:
            lines.append(
                f"| `{indicator.name}` | `{indicator.column}` | {_cell(_bands(indicator))} "
                f"| {_cell(indicator.description)} |"
            )
    else:
        lines += ["", "No indicators: banks see nothing of it but its share of a score."]
    if department.signals:
        lines += [
            "",
            "| monitoring signal | watches column | rule | severity | before/after shown as |",
            "|---|---|---|---|---|",
        ]
        for signal in department.signals:
            shown_as = f"`{signal.indicator}` bands" if signal.indicator else "— (no values)"
            lines.append(
                f"| `{signal.signal.value}` | `{signal.column}` | {signal.rule.value} "
                f"| {signal.severity.value} | {shown_as} |"
            )
    else:
        lines += ["", "No monitoring signals: banks watching an enterprise hear nothing from it."]
    lines += _statistics(department)
    return "\n".join(lines) + "\n"


def _statistics(department: Department) -> list[str]:
    """What a regulator's cohort query may group by and sum (besides chain and region)."""
    spec = department.statistics
    lines = [
        "",
        "| statistics dimension (regulators group by) | from | levels |",
        "|---|---|---|",
        "| `chain` | the node's chain | yrd · prd · bth |",
        "| `region` | USCC characters 3–4 | 11 · 12 · 13 · 31 · 32 · 33 · 34 · 44 · other |",
    ]
    for dimension in spec.dimensions:
        source = (
            f"indicator `{dimension.indicator}`"
            if dimension.indicator
            else f"column `{dimension.column}`"
        )
        lines.append(f"| `{dimension.name}` | {source} | {_cell(' · '.join(dimension.levels))} |")
    if not spec.sums:
        return [*lines, "", "No summed columns: regulators count enterprises only."]
    lines += [
        "",
        "| summed column (regulators) | clipped to | unit | one enterprise moves a sum by |",
        _RULE4,
    ]
    for total in spec.sums:
        units = round(max(abs(total.lower), abs(total.upper)) / total.unit)
        lines.append(
            f"| `{total.column}` | {_number(total.lower)} to {_number(total.upper)} "
            f"| {_number(total.unit)} | {units} units |"
        )
    return lines


def reference_markdown(departments: Iterable[Department]) -> str:
    """The reference page of the given (built-in) departments."""
    parts = [
        "# Built-in department schemas",
        "",
        "Generated by `creditshare node schema reference` from the schema files shipped in",
        "`src/creditshare/departments/schemas/`; do not edit by hand. How to write a schema of",
        "your own: [department-schemas.md](department-schemas.md).",
        "",
    ]
    for department in departments:
        parts.append(schema_tables(department))
    return "\n".join(parts)
