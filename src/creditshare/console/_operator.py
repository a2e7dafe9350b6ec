"""The operator's pages (a slice of issue 15 fills this room)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["NAVIGATION", "router"]

router = APIRouter()

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = []
