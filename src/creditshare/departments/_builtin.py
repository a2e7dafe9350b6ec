"""The departments that ship with creditshare, declared in ``schemas/*.toml``.

They are ordinary schema files read with the same loader a department's own file
goes through, so a built-in has no powers a custom schema lacks. Their features
are deliberately simple (logs of money, capped counts, mapped grades) so a
scorecard over them stays explainable to a loan officer and to the enterprise.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from creditshare.departments._schema import Department
from creditshare.departments._toml import load_schema, parse_schema

__all__ = ["DEPARTMENTS", "builtin_schema_text", "get_department", "resolve_department"]

_PACKAGE = "creditshare.departments"
_ORDER = ("tax", "market", "social", "court", "utility")


def builtin_schema_text(department_id: str) -> str:
    """The TOML a built-in department is declared in (for ``node schema show``)."""
    if department_id not in _ORDER:
        raise KeyError(_unknown(department_id))
    return (resources.files(_PACKAGE) / "schemas" / f"{department_id}.toml").read_text("utf-8")


def _load() -> dict[str, Department]:
    loaded = {}
    for department_id in _ORDER:
        department = parse_schema(
            builtin_schema_text(department_id), f"built-in schema {department_id}.toml"
        )
        assert department.id == department_id, department.source
        loaded[department_id] = department
    return loaded


DEPARTMENTS: dict[str, Department] = _load()


def _unknown(department_id: str) -> str:
    return f"unknown department {department_id!r}; built-in: {', '.join(_ORDER)}"


def get_department(department_id: str) -> Department:
    """A built-in department by id (KeyError naming the known ones otherwise)."""
    try:
        return DEPARTMENTS[department_id]
    except KeyError:
        raise KeyError(_unknown(department_id)) from None


def resolve_department(department_id: str | None, schema_file: Path | None) -> Department:
    """A node's department: its own schema file, or a built-in one by id.

    With both, the file's id must be the one named, so a node's configuration cannot
    say "tax" while it serves another department's columns.
    """
    if schema_file is not None:
        department = load_schema(schema_file)
        if department_id and department.id != department_id:
            raise ValueError(
                f"{schema_file} declares department {department.id!r}, but department is "
                f"{department_id!r}; make them agree or leave department out"
            )
        return department
    if not department_id:
        raise ValueError("set department (a built-in id) or schema_file (your own schema)")
    return get_department(department_id)
