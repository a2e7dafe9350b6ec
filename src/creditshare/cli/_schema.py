"""``creditshare node schema ...``: check, show and document department schemas.

A department's data steward writes a schema once and checks it (and an export
against it) here, before any node loads it: the same loader and the same row
checks the node uses, so "check passes" means "the node will accept it".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from creditshare.cli._common import console

if TYPE_CHECKING:
    from creditshare.departments import Department

__all__ = ["schema_app"]

schema_app = typer.Typer(
    no_args_is_help=True,
    help="Department schemas (TOML): check one, show one, print the built-ins' reference.",
)


def _department(name: str) -> Department:
    """A built-in id, or a path to a schema file."""
    from creditshare.departments import get_department, load_schema

    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return load_schema(path)
    try:
        return get_department(name)
    except KeyError as exc:
        raise typer.BadParameter(f"{exc.args[0]}; or give a schema file (.toml)") from None


@schema_app.command("check")
def schema_check(
    schema: Annotated[Path, typer.Argument(help="schema file (TOML)")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="an export to check against the schema (repeatable)"),
    ] = None,
) -> None:
    """Check a schema file, and optionally export files against it, without importing."""
    from creditshare.departments import load_schema
    from creditshare.node import check_files

    department = load_schema(schema)
    unclipped = sum(1 for f in department.features if not f.clipped)
    console.print(
        f"{schema}: department {department.id!r} — {len(department.fields)} columns, "
        f"{len(department.features)} model features ({unclipped} never clipped), "
        f"{len(department.indicators)} indicator(s)"
    )
    if data:
        rows = check_files(department, data)
        console.print(f"{rows} rows in {len(data)} file(s) match the schema")


@schema_app.command("show")
def schema_show(
    department: Annotated[str, typer.Argument(help="a built-in department id, or a schema file")],
    toml: Annotated[bool, typer.Option("--toml", help="print the schema's TOML source")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """A schema's columns (types, units, accepted values), features and indicators."""
    from creditshare.departments import builtin_schema_text, schema_tables

    loaded = _department(department)
    if toml:
        path = Path(department)
        print(path.read_text("utf-8") if path.exists() else builtin_schema_text(loaded.id), end="")
    elif as_json:
        print(json.dumps(_as_json(loaded), indent=2, ensure_ascii=False))
    else:
        print(schema_tables(loaded), end="")


def _as_json(department: Department) -> dict[str, object]:
    from creditshare.departments import domain

    return {
        "id": department.id,
        "display_name": department.display_name,
        "description": department.description,
        "columns": [
            {
                "name": f.name,
                "type": f.kind,
                "unit": f.unit,
                "accepted": domain(f),
                "missing": f.missing,
                "description": f.description,
            }
            for f in department.fields
        ],
        "features": [
            {
                "name": f.name,
                "column": f.column,
                "encoding": f.encoding,
                "transform": f.transform,
                "clipped": f.clipped,
                "description": f.description,
            }
            for f in department.features
        ],
        "indicators": [
            {
                "name": i.name,
                "column": i.column,
                "bands": list(i.bands),
                "description": i.description,
            }
            for i in department.indicators
        ],
        "signals": [
            {
                "type": s.signal.value,
                "column": s.column,
                "indicator": s.indicator,
                "severity": s.severity.value,
                "rule": s.rule.value,
            }
            for s in department.signals
        ],
    }


@schema_app.command("reference")
def schema_reference() -> None:
    """Print the Markdown reference of every built-in schema (docs/schema-reference.md)."""
    from creditshare.departments import DEPARTMENTS, reference_markdown

    print(reference_markdown(DEPARTMENTS.values()), end="")
