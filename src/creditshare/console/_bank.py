"""The bank's pages: query an enterprise and read its decrypted profile, the consents
the bank holds, its monitoring subscriptions and alerts.

The answer is decrypted here, in the console, with the bank's Paillier key (the SDK's
``query``): the coordinator and the browser never see a key, and the page shows what
the SDK decrypted, field by field, nothing recomputed.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from creditshare.client import DEFAULT_MODEL_ID, Alert, AlertInbox, Gap
from creditshare.consent import Purpose
from creditshare.console import _profile_view
from creditshare.console._format import text, utc_time
from creditshare.console._forms import FormErrors
from creditshare.console._profile_view import (
    Placement,
    chain_options,
    check_uscc,
    consents_page,
    errors_for,
    form_list,
    local_error,
    message_of,
    profile_view,
)
from creditshare.console._render import page
from creditshare.console._state import ConsoleState, console_state
from creditshare.errors import CreditShareError, ProblemError, ScoreUnavailableError

__all__ = ["NAVIGATION", "router"]

router = APIRouter()

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = [
    ("/bank/query", "bank.nav_query"),
    ("/bank/consents", "bank.nav_consents"),
    ("/bank/alerts", "bank.nav_alerts"),
]

_QUERY_FIELDS = ("uscc", "consent_id", "purpose", "model_id", "chains")


def _recorded_refusal(exc: ProblemError) -> bool:
    """A consent that does not cover the query (recorded in the ledger as a refusal)."""
    return exc.status == 403 and bool(exc.body.get("recorded"))


def _unknown_model(exc: ProblemError) -> bool:
    return exc.status == 404 and "model" in exc.detail.lower()


_QUERY_PLACEMENTS: list[Placement] = [
    (_recorded_refusal, "consent_id"),
    (_unknown_model, "model_id"),
]


def _models(state: ConsoleState) -> list[tuple[str, str]]:
    """The models a query may name, asked each time (a bureau publishes new ones); the
    default one alone if the coordinator cannot list them now."""
    try:
        models = state.sdk.models()
    except CreditShareError:
        return [(DEFAULT_MODEL_ID, DEFAULT_MODEL_ID)]
    return [(str(m["id"]), f"{m['id']} · {m.get('description', '')}") for m in models]


def _query_page(
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
        "bank/query.html",
        status_code=status_code,
        errors=errors,
        values=values,
        purposes=[p.value for p in Purpose],
        models=_models(state),
        chains=chain_options(state.client),
        **context,
    )


@router.get("/bank/query", response_class=HTMLResponse)
def query_form(
    request: Request,
    uscc: str = "",
    consent_id: str = "",
    purpose: str = Purpose.PRE_LOAN_REVIEW.value,
) -> HTMLResponse:
    """The query form (a held consent's link fills in its enterprise and purpose)."""
    values = {
        "uscc": uscc,
        "consent_id": consent_id,
        "purpose": purpose,
        "model_id": DEFAULT_MODEL_ID,
        "chains": [],
    }
    return _query_page(request, values)


@router.get("/bank/uscc-check", response_class=HTMLResponse)
def uscc_check(request: Request, uscc: str = "") -> HTMLResponse:
    """The USCC field's live check (htmx, as the user types): what is wrong and where,
    or the enterprise's home chain."""
    code, problem = check_uscc(uscc)
    return page(
        request,
        "bank/_uscc_status.html",
        problem=problem,
        home=code.chain.value if code is not None else "",
    )


@router.post("/bank/query", response_class=HTMLResponse)
def run_query(
    request: Request,
    uscc: Annotated[str, Form()] = "",
    consent_id: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = Purpose.PRE_LOAN_REVIEW.value,
    model_id: Annotated[str, Form()] = DEFAULT_MODEL_ID,
    chains: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    """Query, decrypt here, show the profile; a refusal goes next to its field."""
    state = console_state(request)
    chosen = form_list(chains or [])
    values = {
        "uscc": uscc.strip(),
        "consent_id": consent_id.strip(),
        "purpose": purpose,
        "model_id": model_id,
        "chains": chosen,
    }
    errors = FormErrors()
    code, problem = check_uscc(uscc)
    if code is None:
        errors.add("uscc", problem or text(request, "bank.uscc_required"))
    if not values["consent_id"]:
        errors.add("consent_id", text(request, "bank.consent_required"))
    if errors:
        return _query_page(request, values, errors=errors, status_code=422)
    assert code is not None
    try:
        profile = state.sdk.query(str(code), consent_id.strip(), purpose, model_id, chosen or None)
    except ScoreUnavailableError as exc:
        return _query_page(request, values, errors=local_error("model_id", exc), status_code=422)
    except CreditShareError as exc:
        errors = errors_for(exc, _QUERY_FIELDS, _QUERY_PLACEMENTS)
        return _query_page(request, values, errors=errors, status_code=422)
    return _query_page(request, values, profile=profile_view(profile))


def _consent_state(row: dict[str, Any]) -> str:
    """Whether a held consent can still be queried with: revoked, expired and used up
    are shown as such (the query would be refused), not as active."""
    if row.get("revoked"):
        return "revoked"
    until = row.get("document", {}).get("valid_until")
    try:
        if until and datetime.fromisoformat(str(until).replace("Z", "+00:00")) <= datetime.now(UTC):
            return "expired"
    except ValueError:
        pass
    limit = row.get("max_uses")
    if limit is not None and int(row.get("uses", 0)) >= int(limit):
        return "used_up"
    return "active"


@router.get("/bank/consents", response_class=HTMLResponse)
def held_consents(request: Request, before: str = "") -> HTMLResponse:
    """The consents granted to this bank, newest first, a page at a time (``before``:
    the last consent of the previous page), each with a link to query."""
    state = console_state(request)
    problem = ""
    rows: list[dict[str, Any]] = []
    more: str | None = None
    try:
        rows, more = consents_page(state.sdk, before, _profile_view.CONSENTS_PAGE)
    except CreditShareError as exc:
        problem = message_of(exc)
    consents = [
        {
            "id": str(r["consent_id"]),
            "uscc": str(r["uscc"]),
            "purpose": str(r["purpose"]),
            "uses": r.get("uses", 0),
            "max_uses": r.get("max_uses"),
            "valid_until": utc_time(r.get("document", {}).get("valid_until")),
            "chains": ", ".join(r.get("document", {}).get("chains", [])),
            "state": _consent_state(r),
        }
        for r in rows
    ]
    return page(
        request,
        "bank/consents.html",
        consents=consents,
        problem=problem,
        more=more,
        paged=bool(before),
    )


_inbox_lock = threading.Lock()
#: Opened alerts a page keeps in memory (newest); older ones were shown already.
ALERTS_KEPT = 500
#: Gaps the page lists (the rest are counted).
GAPS_SHOWN = 100
#: The inbox file in ``work_dir``: the cursor reached, event ids handed out, seqs seen.
INBOX_FILE = "alert-inbox.json"


def _inbox(state: ConsoleState) -> AlertInbox:
    """The bank's alert inbox, kept in ``work_dir`` so a restart resumes where the last
    read stopped (and still knows which seqs never came) instead of from the start."""
    inbox: AlertInbox | None = state.extras.get("bank_inbox")
    if inbox is None:
        inbox = AlertInbox(state.settings.work_dir / INBOX_FILE)
        state.extras["bank_inbox"] = inbox
    return inbox


@router.get("/bank/alerts", response_class=HTMLResponse)
def alerts(request: Request) -> HTMLResponse:
    """Monitoring: the bank's subscriptions, the alerts opened with its alert key (read
    from where the last read stopped, the newest kept in memory), and the events a node
    numbered that never arrived (a coordinator withholding alerts leaves such gaps)."""
    state = console_state(request)
    problems: list[str] = []
    subscriptions: list[dict[str, Any]] = []
    try:
        subscriptions = state.sdk.subscriptions()
    except CreditShareError as exc:
        problems.append(message_of(exc))
    has_key = state.settings.alert_key_file is not None
    opened: list[Alert] = []
    gaps: list[Gap] = []
    if has_key:
        with _inbox_lock:
            seen: deque[Alert] = state.extras.setdefault("bank_alerts", deque(maxlen=ALERTS_KEPT))
            try:
                inbox = _inbox(state)
                seen.extend(state.sdk.alerts(inbox=inbox))
                gaps = list(inbox.gaps)
            except CreditShareError as exc:
                problems.append(message_of(exc))
            opened = list(reversed(seen))
    rows = [
        {
            "id": str(s["subscription_id"]),
            "uscc": str(s["uscc"]),
            "signals": ", ".join(str(x.get("type", "")) for x in s.get("signals", [])),
            "chains": ", ".join(s.get("chains", [])),
            "status": str(s.get("status", "")),
            "created": utc_time(s.get("created_at")),
            "ended": str(s.get("ended_reason") or ""),
        }
        for s in subscriptions
    ]
    return page(
        request,
        "bank/alerts.html",
        subscriptions=rows,
        alerts=opened,
        gaps=gaps[:GAPS_SHOWN],
        gaps_more=max(0, len(gaps) - GAPS_SHOWN),
        has_key=has_key,
        problems=problems,
    )
