"""Messages of the schema loader: where in the file (``columns[2] (name "x").min``) and
what is wrong, in one short line a data steward can act on (never a pydantic dump), and
the checks of the labels and texts a schema shows to other parties."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

from creditshare.departments._schema import NUMBER_LIMIT, shown

__all__ = ["MAX_LABEL"]

MAX_LABEL = 64
#: Characters a level may not hold: levels are written bare in CSV cells (where a quote
#: is CSV quoting) and listed comma-separated in messages, `schema show` and the reference.
_LEVEL_FORBIDDEN = ',"'


class _Located(Exception):  # noqa: N818 - internal: always re-raised as SchemaError
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _entry(kind: str, k: int, name: object) -> str:
    """``columns[2] (name "x")``: the entry by its position and, when it has one, its name."""
    if not isinstance(name, str):
        return f"{kind}[{k}]"
    return f'{kind}[{k}] (name "{shown(name, 64)[1:-1]}")'


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    """``features[2] (name "x").cap`` from a pydantic location: the entry by its name too."""
    parts: list[str] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            entry = node[step] if isinstance(node, list) and step < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            parts[-1] = _entry(parts[-1], step, name)
            node = entry
        elif isinstance(node, dict) and step in node:
            parts.append(str(step) if re.fullmatch(r"[A-Za-z0-9_-]+", str(step)) else shown(step))
            node = node[step]
        elif not parts or isinstance(node, dict):
            # a missing key
            parts.append(str(step) if re.fullmatch(r"[A-Za-z0-9_-]+", str(step)) else shown(step))
            break
        else:
            break  # a pydantic union member ("float", "date"): not a key of the file
    return ".".join(parts) or "top level"


_EXPECTED = {
    "float_type": "a number (no quotes)",
    "int_type": "a whole number (no quotes)",
    "string_type": "a string in quotes",
    "list_type": "a list [...]",
    "dict_type": "a table { ... }",
    "model_type": "a table { ... }",
    "bool_type": "true or false",
    "literal_error": "",
}


def _toml_type(value: object) -> str:
    """What a TOML value is, as a steward wrote it."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return "an integer" if abs(value) > NUMBER_LIMIT else f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, time):
        return "a time of day"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _reason(error: Any) -> str:
    """One line a steward can act on, from a pydantic error (never its dump)."""
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (misspelt? see docs/department-schemas.md)"
    if kind == "missing":
        return "this key is required"
    if kind == "string_pattern_mismatch":
        pattern = str(error.get("ctx", {}).get("pattern", ""))
        longest = re.search(r"\{0,([0-9]+)\}", pattern)
        size = f", at most {int(longest.group(1)) + 1} characters" if longest else ""
        return (
            f"{_toml_type(value)} is not a name: lower-case letters a-z, digits and _, "
            f"starting with a letter{size}"
        )
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        return f"must be {expected}, not {_toml_type(value)}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_toml_type(value)}"
    if kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
        return str(error["msg"])
    if kind in ("finite_number",):
        return "must be finite"
    return f"{error['msg']} (got {_toml_type(value)})"


def _text(value: str, where: str) -> None:
    """Names, descriptions and units go into tables, messages and other parties'
    screens: one line of visible text."""
    if not value.isprintable():
        raise _Located(where, "must be one line of visible text (no control characters)")


def _label(value: str, where: str, *, level: bool) -> str:
    """A category level or a band label: short, visible and unambiguous where written."""
    if not 0 < len(value) <= MAX_LABEL:
        raise _Located(where, f"must be 1 to {MAX_LABEL} characters, not {len(value)}")
    if not value.isprintable():
        raise _Located(where, f"{shown(value)} holds an invisible or control character")
    if value != value.strip():
        raise _Located(where, f"{shown(value)} starts or ends with a space (cells are trimmed)")
    if level and any(c in value for c in _LEVEL_FORBIDDEN):
        raise _Located(
            where,
            f"{shown(value)}: a level holds no comma or double quote (levels are written "
            "bare in CSV cells and listed comma-separated)",
        )
    return value
