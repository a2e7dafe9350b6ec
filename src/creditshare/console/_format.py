"""How every console page writes a time and looks up a word outside a template.

One place, so that every page shows a time alike (to the second, always saying UTC:
a loan officer in another zone is never left guessing) and a handler's message is
in the page's language. The coordinator sends ISO times, a node's database gives
datetimes (naive from SQLite, stored in UTC), the ledger gives Unix seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from creditshare.console._render import language_of
from creditshare.console._state import console_state

__all__ = ["text", "utc_time"]

_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def utc_time(value: datetime | str | float | None) -> str:
    """``value`` (a datetime, an ISO text, or Unix seconds) as ``YYYY-MM-DD HH:MM:SS UTC``;
    a naive time is taken as UTC; "" for nothing; a text that is no time is shown as
    sent (nothing the coordinator says is dropped)."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime(_FORMAT)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_FORMAT)


def text(request: Request, key: str, **values: Any) -> str:
    """The message ``key`` (``"<room>.<key>"``) in this request's language."""
    return console_state(request).catalog.text(language_of(request), key, **values)
