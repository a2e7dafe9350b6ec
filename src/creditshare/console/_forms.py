"""The coordinator's refusal, put next to the form field it concerns.

A problem body names a field (``field``) or locations (``errors[].location``, such as
``body.config.epochs``); a page passes the names its form uses, and each message goes to
the field whose name ends the location. What matches no field is shown above the form,
so no refusal is ever lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from creditshare.errors import CreditShareError, ProblemError

__all__ = ["FormErrors", "form_errors"]


@dataclass
class FormErrors:
    """Messages by form field; ``form`` holds those that concern no one field."""

    fields: dict[str, str] = field(default_factory=dict)
    form: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.form)

    def add(self, name: str | None, message: str) -> None:
        if name is None:
            self.form.append(message)
        elif name in self.fields:
            self.fields[name] += "; " + message
        else:
            self.fields[name] = message


def form_errors(exc: CreditShareError, names: Iterable[str]) -> FormErrors:
    """Where each part of ``exc`` belongs among the form's field ``names``."""
    known = list(names)
    errors = FormErrors()

    def owner(location: str) -> str | None:
        parts = [p for p in location.replace("[", ".").replace("]", "").split(".") if p]
        for part in reversed(parts):
            if part in known:
                return part
        return None

    if not isinstance(exc, ProblemError):
        errors.add(None, str(exc))
        return errors
    body = exc.body
    named = body.get("field")
    listed = body.get("errors")
    if isinstance(listed, list) and listed:
        for item in listed:
            if isinstance(item, dict):
                location = str(item.get("location", ""))
                errors.add(owner(location), f"{item.get('message', exc.detail)}")
    elif isinstance(named, str):
        errors.add(owner(named), exc.detail)
    else:
        errors.add(None, exc.detail or exc.title)
    return errors
