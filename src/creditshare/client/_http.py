"""What every SDK call does with a refusal: the coordinator's problem as an exception."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from creditshare.errors import ProblemError

__all__ = ["problem_of", "segment"]


def problem_of(response: httpx.Response) -> ProblemError:
    """The coordinator's RFC 9457 problem (or what stands for one) as an exception.

    A streamed response must have been read first (``response.read()``)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ProblemError(
        response.status_code,
        str(body.get("title", response.reason_phrase)),
        str(body.get("detail", response.text[:200])),
        body,
    )


def segment(value: object) -> str:
    """``value`` as one URL path segment: every ``/``, ``?``, ``#`` and ``%`` escaped.

    Every id a caller passes goes into a path through this, so an id such as
    ``bank-1/disable?x=`` names no participant rather than reaching another route
    (a console's form hands typed text straight to these calls)."""
    return quote(str(value), safe="")
