"""Request dependencies: the services container and the authenticated caller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from creditshare.coordinator._db import Participant
from creditshare.coordinator._participants import Role
from creditshare.coordinator._services import Services
from creditshare.errors import AuthenticationError, PermissionDeniedError

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
    participant = await asyncio.to_thread(services.participants.authenticate, token.strip())
    services.participant_limits.hit(participant.id)
    request.state.caller = participant
    return participant


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
