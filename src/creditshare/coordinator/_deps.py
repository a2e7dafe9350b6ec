"""Request dependencies: the services container and the authenticated caller.

Authentication is throttled. Every failed attempt counts against the client address
it came from, and one naming a well-formed key also against that key id. An address
over its limit gets 429 before any comparison (its own budget). A key id over its
limit gets 429 before any comparison too, except from addresses that key was used
from successfully before (``KnownAddresses``): hammering a key id locks the
attackers out, not the key's owner. An owner moving to a new address while its key
id is under attack waits for the window (or gets a new key, with a new key id).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from creditshare.coordinator._db import Participant
from creditshare.coordinator._limits import Limiter, hit, peek
from creditshare.coordinator._participants import Role, key_id_of
from creditshare.coordinator._services import Services
from creditshare.errors import AuthenticationError, PermissionDeniedError, RateLimitedError

__all__ = ["CallerDep", "ServicesDep", "authenticated", "require_roles"]


#: A training job's relayed steps: counted on their own limit (a job makes thousands).
_TRAINING_STEP = re.compile(
    r"^/v1/training-jobs/[^/]+/"
    r"(psi|psi/points|open|forward|gradient|apply|level-sums|apply-level-sums|progress)$"
)


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
    limits = services.limits
    address = request.client.host if request.client else "unknown"
    key_id = key_id_of(token)
    counted: list[tuple[Limiter, str]] = [(limits.auth_by_address, address)]
    await peek(limits.auth_by_address, address)
    if key_id is not None:
        counted.append((limits.auth_by_key_id, key_id))
        if (key_id, address) not in limits.known_addresses:
            await peek(limits.auth_by_key_id, key_id)
    try:
        participant = await asyncio.to_thread(services.participants.authenticate, token)
    except AuthenticationError:
        for limiter, key in counted:
            with contextlib.suppress(RateLimitedError):  # counted up to the limit: enough
                await hit(limiter, key)
        raise
    if key_id is not None:
        limits.known_addresses.add(key_id, address)
    steps = _TRAINING_STEP.match(request.url.path) is not None
    await hit(limits.training_steps if steps else limits.participant, participant.id)
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
