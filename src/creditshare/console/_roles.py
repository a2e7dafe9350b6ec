"""Which pages each role's console serves."""

from __future__ import annotations

from fastapi import APIRouter

from creditshare.console import (
    _bank,
    _bureau,
    _department,
    _enterprise,
    _operator,
    _regulator,
)

__all__ = ["role_pages"]

_PAGES = {
    "bank": (_bank.router, _bank.NAVIGATION),
    "enterprise": (_enterprise.router, _enterprise.NAVIGATION),
    "bureau": (_bureau.router, _bureau.NAVIGATION),
    "department": (_department.router, _department.NAVIGATION),
    "operator": (_operator.router, _operator.NAVIGATION),
    "regulator": (_regulator.router, _regulator.NAVIGATION),
}


def role_pages(role: str) -> tuple[APIRouter, list[tuple[str, str]]]:
    """The role's router and menu; a console serves its own role's pages only."""
    return _PAGES[role]
