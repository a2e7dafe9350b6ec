"""The consent rules, as one pure function: does this consent cover this query, now?

The coordinator keeps consents in its database and counts their uses there; the
rules themselves (who, about whom, why, when, which chains, how many times) need
no storage, so they live here where a unit test can state them without a server.
Counting the use that a check allows stays a conditional UPDATE in the coordinator,
which is what makes the last permitted use safe across replicas.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from creditshare.consent._grant import ConsentGrant, Purpose
from creditshare.errors import ConsentRefusedError
from creditshare.identity import Chain

__all__ = ["ConsentState", "check"]


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A granted consent as stored: the signed grant plus what has happened to it since."""

    grant: ConsentGrant
    revoked: bool
    uses: int


def check(
    state: ConsentState,
    *,
    requester: str,
    uscc: str,
    purpose: Purpose,
    chains: Collection[Chain] | None,
    now: datetime,
) -> ConsentGrant:
    """The grant, if it covers this query at ``now``; otherwise ConsentRefusedError saying why.

    ``chains`` are the chains asked for (None: the consent's own). Counts nothing; a
    use is spent only afterwards, by the caller, and only if this passed.
    """
    grant = state.grant
    if grant.grantee != requester:
        raise ConsentRefusedError("the consent was granted to another participant")
    if grant.uscc != uscc:
        raise ConsentRefusedError("the consent was granted by another enterprise")
    if grant.purpose is not purpose:
        raise ConsentRefusedError(
            f"purpose {purpose.value} is outside the consent (granted for {grant.purpose.value})"
        )
    if state.revoked:
        raise ConsentRefusedError("the consent has been revoked")
    if now < grant.valid_from:
        raise ConsentRefusedError("the consent is not valid yet")
    if now >= grant.valid_until:
        raise ConsentRefusedError("the consent has expired")
    if chains and not set(chains) <= set(grant.chains):
        outside = sorted(c.value for c in set(chains) - set(grant.chains))
        raise ConsentRefusedError(f"chain(s) {', '.join(outside)} are outside the consent")
    if grant.max_uses is not None and state.uses >= grant.max_uses:
        raise ConsentRefusedError(
            f"the consent's use limit is exhausted ({state.uses} of {grant.max_uses} used)"
        )
    return grant
