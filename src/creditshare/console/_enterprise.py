"""The enterprise's pages: grant a consent (signed here, with the enterprise's own key),
list and revoke its consents, and read its access log with every entry's inclusion in
the signed ledger checked here.

The enterprise's USCC is the one its CA-issued credential names, so the console acts
for exactly the enterprise whose key it holds. A revocation is signed too, so every
data node of the consent's chains refuses the consent itself, not only the
coordinator.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from creditshare.client import AccessEntry, WitnessPolicy
from creditshare.consent import ALL_INDICATORS, ConsentGrant, Purpose
from creditshare.console import _profile_view
from creditshare.console._format import text, utc_time
from creditshare.console._forms import FormErrors
from creditshare.console._profile_view import (
    Placement,
    chain_options,
    consents_page,
    errors_for,
    form_list,
    message_of,
)
from creditshare.console._render import page
from creditshare.console._state import ConsoleState, console_state
from creditshare.crypto import VerifyKey
from creditshare.errors import ConfigurationError, CreditShareError, ProblemError
from creditshare.identity import Chain
from creditshare.pki import parse_credential

__all__ = ["NAVIGATION", "router"]

router = APIRouter()

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = [
    ("/enterprise/consents", "enterprise.nav_consents"),
    ("/enterprise/grant", "enterprise.nav_grant"),
    ("/enterprise/log", "enterprise.nav_log"),
]

_GRANT_FIELDS = ("grantee", "purpose", "days", "max_uses", "chains", "indicators")
_MAX_DAYS = 3650


def _about(word: str) -> Any:
    """A refusal whose message is about ``word`` (the coordinator names no field for a
    grantee that is not a bank or bureau, or indicators no node publishes)."""

    def test(exc: ProblemError) -> bool:
        return exc.status == 422 and word in exc.detail.lower()

    return test


_GRANT_PLACEMENTS: list[Placement] = [
    (_about("grantee"), "grantee"),
    (_about("indicator"), "indicators"),
    (_about("chains"), "chains"),
]


def _uscc(state: ConsoleState) -> str:
    """The enterprise's USCC, as its credential names it."""
    code = state.extras.get("enterprise_uscc")
    if code is None:
        for data in state.sdk.identity.credentials:
            code = parse_credential(data).uscc
            if code:
                break
        if not code:
            raise ConfigurationError("the identity's credentials name no USCC: not an enterprise")
        state.extras["enterprise_uscc"] = code
    result: str = code
    return result


# consents --------------------------------------------------------------------------------


def _consent_rows(state: ConsoleState, before: str) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the enterprise's consents, newest first, and the next page's cursor."""
    rows, more = consents_page(state.sdk, before, _profile_view.CONSENTS_PAGE)
    now = datetime.now(UTC)
    out = []
    for r in rows:
        document = r.get("document", {})
        until = str(document.get("valid_until", ""))
        try:
            expired = datetime.fromisoformat(until.replace("Z", "+00:00")) <= now
        except ValueError:
            expired = False
        out.append(
            {
                "id": str(r["consent_id"]),
                "grantee": str(r["grantee"]),
                "purpose": str(r["purpose"]),
                "uses": r.get("uses", 0),
                "max_uses": r.get("max_uses"),
                "chains": ", ".join(document.get("chains", [])),
                "indicators": ", ".join(
                    i for i in document.get("indicators", []) if i != ALL_INDICATORS
                ),
                "valid_from": utc_time(document.get("valid_from")),
                "valid_until": utc_time(until),
                "revoked": bool(r.get("revoked")),
                "expired": expired,
                "created": str(r.get("created_at") or document.get("valid_from", "")),
            }
        )
    return out, more  # newest first, as the coordinator sends them


def _consents_page(
    request: Request, status_code: int = 200, before: str = "", **context: Any
) -> HTMLResponse:
    state = console_state(request)
    problem = ""
    consents: list[dict[str, Any]] = []
    more: str | None = None
    try:
        consents, more = _consent_rows(state, before)
    except CreditShareError as exc:
        problem = message_of(exc)
    return page(
        request,
        "enterprise/consents.html",
        status_code=status_code,
        consents=consents,
        problem=problem,
        more=more,
        paged=bool(before),
        uscc=_uscc(state),
        **context,
    )


@router.get("/enterprise/consents", response_class=HTMLResponse)
def consents(request: Request, before: str = "") -> HTMLResponse:
    """The enterprise's consents, newest first, a page at a time (``before``: the last
    consent of the previous page), each revocable while it is active."""
    return _consents_page(request, before=before)


@router.post("/enterprise/consents/{consent_id}/revoke", response_class=HTMLResponse)
def revoke(request: Request, consent_id: str) -> HTMLResponse:
    """Revoke with a revocation signed here: every data node then refuses it too."""
    state = console_state(request)
    try:
        result = state.sdk.revoke_consent(consent_id, state.sdk.identity.signing_key)
    except CreditShareError as exc:
        return _consents_page(request, 422, refused={consent_id: message_of(exc)})
    nodes = result.get("nodes") or []
    held = [str(n["node"]) for n in nodes if n.get("holds_revocation")]
    pending = [
        (str(n["node"]), str(n.get("reason") or "")) for n in nodes if not n.get("holds_revocation")
    ]
    return _consents_page(
        request, revoked={"id": consent_id, "held": held, "total": len(nodes), "pending": pending}
    )


# grant -----------------------------------------------------------------------------------


def _indicator_options(state: ConsoleState) -> list[tuple[str, str]]:
    """Every published indicator name (a consent may name only these)."""
    cached = state.extras.get("enterprise_indicators")
    if cached is None:
        try:
            listed = state.sdk.indicators()
        except CreditShareError:
            return []
        names: dict[str, str] = {}
        for item in listed:
            names.setdefault(str(item["name"]), f"{item['name']} · {item.get('description', '')}")
        cached = sorted(names.items())
        state.extras["enterprise_indicators"] = cached
    result: list[tuple[str, str]] = cached
    return result


def _grant_page(
    request: Request,
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    state = console_state(request)
    return page(
        request,
        "enterprise/grant.html",
        status_code=status_code,
        errors=errors,
        values=values,
        uscc=_uscc(state),
        purposes=[p.value for p in Purpose],
        chains=chain_options(state.client),
        indicators=_indicator_options(state),
        **context,
    )


_BLANK = {
    "grantee": "",
    "purpose": Purpose.PRE_LOAN_REVIEW.value,
    "days": "30",
    "max_uses": "",
    "chains": [],
    "indicators": [],
}


@router.get("/enterprise/grant", response_class=HTMLResponse)
def grant_form(request: Request) -> HTMLResponse:
    return _grant_page(request, dict(_BLANK))


def _whole(
    request: Request, errors: FormErrors, name: str, typed: str, low: int, high: int
) -> int | None:
    """``typed`` as a whole number in [low, high], else an error on field ``name``."""
    try:
        value = int(typed.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        errors.add(name, text(request, "enterprise.whole_number", low=low, high=high))
        return None
    return value


@router.post("/enterprise/grant", response_class=HTMLResponse)
def grant(
    request: Request,
    grantee: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = Purpose.PRE_LOAN_REVIEW.value,
    days: Annotated[str, Form()] = "30",
    max_uses: Annotated[str, Form()] = "",
    chains: Annotated[list[str] | None, Form()] = None,
    indicators: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    """Sign the consent here with the enterprise's key and hand it to the coordinator."""
    state = console_state(request)
    values = {
        "grantee": grantee.strip(),
        "purpose": purpose,
        "days": days,
        "max_uses": max_uses,
        "chains": form_list(chains or []),
        "indicators": form_list(indicators or []),
    }
    errors = FormErrors()
    if not values["grantee"]:
        errors.add("grantee", text(request, "enterprise.grantee_required"))
    if purpose not in {p.value for p in Purpose}:
        errors.add("purpose", text(request, "enterprise.purpose_unknown"))
    valid_days = _whole(request, errors, "days", days, 1, _MAX_DAYS)
    uses = None
    if max_uses.strip():
        uses = _whole(request, errors, "max_uses", max_uses, 1, 1_000_000)
    if errors:
        return _grant_page(request, values, errors=errors, status_code=422)
    assert valid_days is not None
    identity = state.sdk.identity
    now = datetime.now(UTC)
    try:
        signed = ConsentGrant.create(
            _uscc(state),
            grantee.strip(),
            purpose,
            now - timedelta(minutes=1),  # a node's clock a little behind still accepts it
            now + timedelta(days=valid_days),
            chains=tuple(form_list(chains or [])) or tuple(Chain),
            indicators=tuple(form_list(indicators or [])) or (ALL_INDICATORS,),
            max_uses=uses,
        ).sign(identity.signing_key)
        stored = state.sdk.grant_consent(signed)
    except CreditShareError as exc:
        errors = errors_for(exc, _GRANT_FIELDS, _GRANT_PLACEMENTS)
        return _grant_page(request, values, errors=errors, status_code=422)
    return _grant_page(request, dict(_BLANK), granted=str(stored["consent_id"]))


# access log ------------------------------------------------------------------------------


def _log_key(state: ConsoleState) -> VerifyKey:
    """The ledger key entries are checked against: pinned in the settings (an enterprise
    console refuses to start without one), never the key of the coordinator the log
    comes from, which would vouch for itself."""
    pinned = state.settings.log_key
    if pinned is None:  # the settings refuse an enterprise console without one
        raise ConfigurationError("this console has no log_key")
    return VerifyKey.from_text(pinned)


def _witness_policy(state: ConsoleState) -> WitnessPolicy | None:
    """The witnesses (and quorum) the settings name, read once; None: unwitnessed."""
    if "enterprise_witnesses" not in state.extras:
        state.extras["enterprise_witnesses"] = state.settings.witness_policy()
    policy: WitnessPolicy | None = state.extras["enterprise_witnesses"]
    return policy


def _entry(entry: AccessEntry) -> dict[str, Any]:
    record = entry.record
    head = entry.head
    return {
        "index": entry.index,
        "time": utc_time(record.time),
        "kind": record.kind,
        "requester": record.requester,
        "role": record.requester_role,
        "purpose": record.purpose,
        "consent": record.consent_id,
        "reason": record.reason,
        "verified": entry.verified,
        "problem": entry.problem,
        "tree_size": entry.tree_size,
        "witnessed_by": ", ".join(entry.witnessed_by),
        "root": base64.b64encode(head.root).decode()[:16] if head is not None else "",
    }


@router.get("/enterprise/log", response_class=HTMLResponse)
def access_log(request: Request) -> HTMLResponse:
    """Every query and refusal about this enterprise, newest first, each entry's proof
    of inclusion under a tree head signed by the pinned ledger key and, with witnesses
    configured, within a head a quorum of them cosigned; the page says which holds."""
    state = console_state(request)
    problem = ""
    entries: list[dict[str, Any]] = []
    key_text = state.settings.log_key or ""
    policy: WitnessPolicy | None = None
    try:
        policy = _witness_policy(state)
        checked = state.sdk.verified_enterprise_queries(_uscc(state), _log_key(state), policy)
        entries = [_entry(e) for e in sorted(checked, key=lambda e: e.index, reverse=True)]
    except CreditShareError as exc:
        problem = message_of(exc)
    return page(
        request,
        "enterprise/log.html",
        entries=entries,
        problem=problem,
        key_text=key_text,
        witnessed=policy is not None,
        quorum=policy.quorum if policy is not None else 0,
        witnesses=len(policy.witnesses) if policy is not None else 0,
        uscc=_uscc(state),
        all_verified=all(e["verified"] for e in entries),
        purposes=[p.value for p in Purpose],
    )
