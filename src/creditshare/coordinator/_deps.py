"""Request dependencies: the services container and the authenticated caller.

Authentication is throttled: a failed attempt with a well-formed key counts against
the key id it named and the address it came from. Once either has reached its
limit, the next attempt is answered 429 before any comparison, so guessing a
secret online is useless.
The price: while someone hammers a key id, its owner gets 429 too (until the
window passes); a new key has a new key id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from creditshare.coordinator._db import Participant
from creditshare.coordinator._limits import Limiter, hit, peek
from creditshare.coordinator._participants import Role, key_id_of
from creditshare.coordinator._services import Services
from creditshare.errors import AuthenticationError, PermissionDeniedError, RateLimitedError

__all__ = ["CallerDep", "ServicesDep", "authenticated", "require_roles"]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _caller(request: Request, services: ServicesDep) -> Participant:
    already: Participant | None = getattr(request.state, "caller", None)
    if already is not None:  # authenticated before its body was read (large bodies)
        return already
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("send an API key as 'Authorization: Bearer <key>'")
    token = token.strip()
    key_id = key_id_of(token)
    # A token that is not a well-formed key cannot match anything: it guesses nothing.
    throttled = [] if key_id is None else _attempt_keys(request, services, key_id)
    for limiter, key in throttled:
        await peek(limiter, key)
    try:
        participant = await asyncio.to_thread(services.participants.authenticate, token)
    except AuthenticationError:
        for limiter, key in throttled:
            with contextlib.suppress(RateLimitedError):  # counted up to the limit: enough
                await hit(limiter, key)
        raise
    await hit(services.limits.participant, participant.id)
    request.state.caller = participant
    return participant


def _attempt_keys(request: Request, services: Services, key_id: str) -> list[tuple[Limiter, str]]:
    address = request.client.host if request.client else "unknown"
    limits = services.limits
    return [(limits.auth_by_address, address), (limits.auth_by_key_id, key_id)]


CallerDep = Annotated[Participant, Depends(_caller)]


async def authenticated(request: Request, services: Services) -> Participant:
    """The caller, for a route that asks for credentials only when configured to."""
    return await _caller(request, services)


def require_roles(*roles: Role) -> Callable[[Participant], Awaitable[Participant]]:
    allowed = {r.value for r in roles}

    async def check(caller: CallerDep) -> Participant:
        if caller.role not in allowed:
            raise PermissionDeniedError(
                f"role {caller.role} may not do this (allowed: {', '.join(sorted(allowed))})"
            )
        return caller

    return check
