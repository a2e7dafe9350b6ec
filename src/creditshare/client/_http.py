"""What every SDK call does with a refusal: the coordinator's problem as an exception."""

from __future__ import annotations

import httpx

from creditshare.errors import ProblemError

__all__ = ["problem_of"]


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
