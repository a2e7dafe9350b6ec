"""The chain operator's pages: participants and their keys, nodes, the ledger, metrics.

Every action goes to the coordinator through the SDK under the operator's API key,
which stays in this process. An API key the coordinator issues is shown once, on the
page that asked for it, and kept nowhere: the coordinator stores only its hash, and so
does this console (it keeps nothing).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from creditshare.client import CreditShareClient
from creditshare.console._format import text, utc_time
from creditshare.console._forms import FormErrors, form_errors
from creditshare.console._render import page
from creditshare.console._state import console_state
from creditshare.errors import CreditShareError, ProblemError
from creditshare.identity import InvalidUsccError, Uscc
from creditshare.pki import PARTICIPANT_ID

__all__ = ["NAVIGATION", "router"]

router = APIRouter()

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = [
    ("/operator/participants", "operator.nav_participants"),
    ("/operator/nodes", "operator.nav_nodes"),
    ("/operator/ledger", "operator.nav_ledger"),
    ("/operator/metrics", "operator.nav_metrics"),
]

ROLES = ("bank", "bureau", "department", "enterprise", "operator")
REGISTER_FIELDS = ("id", "role", "name", "uscc", "signing_key")
#: ``cs_<key id>.<secret>``: a pasted whole key gives its id; the secret is never sent.
_WHOLE_KEY = re.compile(r"^cs_([0-9a-f]{16})\.[A-Za-z0-9_-]+$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
#: Lines of the coordinator's metrics shown on the page (the rest is one link away).
METRICS_LINES = 400
HTTP_TIMEOUT_SECONDS = 10.0


def _participants(request: Request, role: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The participants (of ``role``), or why they could not be listed."""
    try:
        rows = console_state(request).sdk.participants(role)
    except CreditShareError as exc:
        return [], str(exc)
    for row in rows:
        when = row.get("created_at")
        row["created_at"] = utc_time(when) if isinstance(when, str) else ""
    return rows, None


def _participants_page(
    request: Request,
    *,
    status_code: int = 200,
    errors: FormErrors | None = None,
    form: str = "",
    values: dict[str, str] | None = None,
    issued: dict[str, str] | None = None,
    notice: str | None = None,
    row_errors: dict[str, str] | None = None,
) -> HTMLResponse:
    role = request.query_params.get("role") or None
    if role not in ROLES:
        role = None
    rows, problem = _participants(request, role)
    return page(
        request,
        "operator/participants.html",
        status_code=status_code,
        errors=errors,
        form=form,
        values=values or {},
        participants=rows,
        roles=ROLES,
        filter_role=role,  # not `role`: every page has that (the console's own)
        problem=problem,
        issued=issued,
        notice=notice,
        row_errors=row_errors or {},
        blank=FormErrors(),
    )


@router.get("/operator/participants", response_class=HTMLResponse)
def participants(request: Request) -> HTMLResponse:
    """Every participant (or one role's), with the forms that change them."""
    return _participants_page(request)


def _issued(result: dict[str, Any]) -> dict[str, str]:
    """What the page shows once of a newly issued key: the key, its id, its owner."""
    key = str(result["api_key"])
    match = _WHOLE_KEY.match(key)
    return {
        "participant": str(result["participant"]["id"]),
        "api_key": key,
        "key_id": match.group(1) if match else "",
    }


Text = Annotated[str, Form()]


@router.post("/operator/participants/register", response_class=HTMLResponse)
def register(
    request: Request,
    id: Text = "",
    role: Text = "",
    name: Text = "",
    uscc: Text = "",
    signing_key: Text = "",
) -> HTMLResponse:
    """Register a participant and show its first API key, once."""
    values = {"id": id, "role": role, "name": name, "uscc": uscc, "signing_key": signing_key}
    values = {k: v.strip() for k, v in values.items()}
    errors = FormErrors()
    _check_id(request, errors, "id", values["id"])
    if values["role"] == "enterprise":
        if not values["uscc"]:
            errors.add("uscc", text(request, "operator.need_uscc"))
        else:
            try:
                values["uscc"] = str(Uscc.parse(values["uscc"]))
            except InvalidUsccError as exc:
                errors.add("uscc", str(exc))
        if not values["signing_key"]:
            errors.add("signing_key", text(request, "operator.need_signing_key"))
    if errors:
        return _participants_page(
            request, status_code=422, errors=errors, form="register", values=values
        )
    sdk = console_state(request).sdk
    try:
        # The SDK's register_participant takes a parsed signing key: sent as typed
        # here, so that a bad one is the coordinator's refusal, next to its field.
        result = sdk.post(
            "/v1/participants",
            {
                "id": values["id"],
                "role": values["role"],
                "name": values["name"],
                "uscc": values["uscc"] or None,
                "signing_key": values["signing_key"] or None,
            },
        )
    except CreditShareError as exc:
        errors = form_errors(exc, REGISTER_FIELDS)
        owner = "uscc" if values["uscc"] and values["uscc"] in str(exc) else "id"
        _place_conflict(exc, errors, owner)
        return _participants_page(
            request, status_code=422, errors=errors, form="register", values=values
        )
    return _participants_page(request, issued=_issued(result))


@router.post("/operator/participants/issue-key", response_class=HTMLResponse)
def issue_key(request: Request, participant_id: Text = "") -> HTMLResponse:
    """A further API key for a participant (its others keep working), shown once."""
    participant = participant_id.strip()
    errors = FormErrors()
    if not _check_id(request, errors, "participant_id", participant):
        values = {"participant_id": participant}
        return _participants_page(
            request, status_code=422, errors=errors, form="issue", values=values
        )
    try:
        result = console_state(request).sdk.issue_credential(participant)
    except CreditShareError as exc:
        errors = form_errors(exc, ["participant_id"])
        _place_conflict(exc, errors, "participant_id")
        values = {"participant_id": participant}
        return _participants_page(
            request, status_code=422, errors=errors, form="issue", values=values
        )
    return _participants_page(request, issued=_issued(result))


@router.post("/operator/participants/revoke-key", response_class=HTMLResponse)
def revoke_key(request: Request, owner: Text = "", key_id: Text = "") -> HTMLResponse:
    """Revoke one API key by its id (a pasted whole key is reduced to its id here)."""
    participant, given = owner.strip(), key_id.strip()
    whole = _WHOLE_KEY.match(given)
    key = whole.group(1) if whole else given.removeprefix("cs_")
    # The key id only is echoed back: a pasted secret never goes into the page.
    values = {"owner": participant, "key_id": key if _KEY_ID.fullmatch(key) else ""}
    errors = FormErrors()
    _check_id(request, errors, "owner", participant)
    if not _KEY_ID.fullmatch(key):
        errors.add("key_id", text(request, "operator.bad_key_id"))
    if errors:
        return _participants_page(
            request, status_code=422, errors=errors, form="revoke", values=values
        )
    try:
        console_state(request).sdk.revoke_credential(participant, key)
    except CreditShareError as exc:
        errors = form_errors(exc, ["owner", "key_id"])
        # "participant X has no key Y": the key is what is wrong, unless X is unknown.
        _place_conflict(exc, errors, "key_id" if "no key" in str(exc) else "owner")
        return _participants_page(
            request, status_code=422, errors=errors, form="revoke", values=values
        )
    notice = text(request, "operator.revoked", key_id=key, participant=participant)
    return _participants_page(request, notice=notice)


@router.post("/operator/participants/{participant_id}/disable", response_class=HTMLResponse)
def disable(request: Request, participant_id: str) -> HTMLResponse:
    """Suspend a participant: every key of it fails from its next request on."""
    return _switch(request, participant_id, "disable")


@router.post("/operator/participants/{participant_id}/enable", response_class=HTMLResponse)
def enable(request: Request, participant_id: str) -> HTMLResponse:
    """Lift a suspension: its unrevoked keys work again."""
    return _switch(request, participant_id, "enable")


def _switch(request: Request, participant_id: str, action: str) -> HTMLResponse:
    if not PARTICIPANT_ID.fullmatch(participant_id):
        # No row has this id (only a crafted request sends it): said above the table.
        message = text(request, "operator.bad_participant_id")
        return _participants_page(request, status_code=422, notice=f"{participant_id}: {message}")
    sdk = console_state(request).sdk
    call = sdk.disable_participant if action == "disable" else sdk.enable_participant
    try:
        call(participant_id)
    except CreditShareError as exc:
        # A row's button has no field: its refusal is shown in its row.
        message = exc.detail if isinstance(exc, ProblemError) else str(exc)
        return _participants_page(request, status_code=422, row_errors={participant_id: message})
    notice = text(request, f"operator.{action}d_notice", participant=participant_id)
    return _participants_page(request, notice=notice)


def _check_id(request: Request, errors: FormErrors, name: str, value: str) -> bool:
    """Whether ``value`` is a participant id (the pattern the coordinator and the
    credentials use); if not, why, on field ``name``: a typed id goes into a URL path,
    so nothing else is ever sent."""
    if PARTICIPANT_ID.fullmatch(value):
        return True
    errors.add(name, text(request, "operator.bad_participant_id"))
    return False


def _place_conflict(exc: CreditShareError, errors: FormErrors, name: str) -> None:
    """A 404 or 409 names no field (``participant 'x' already exists``), but this form
    knows which of its fields the refusal is about: put it there, not above the form."""
    if isinstance(exc, ProblemError) and exc.status in (404, 409) and errors.form:
        for message in errors.form:
            errors.add(name, message)
        errors.form.clear()


@router.get("/operator/nodes", response_class=HTMLResponse)
def nodes(request: Request) -> HTMLResponse:
    """Every data node the coordinator knows, with what its last probe or query saw, and
    the coordinator's own readiness (a chain none of whose nodes answers degrades it)."""
    problem = None
    rows: list[dict[str, Any]] = []
    try:
        rows = console_state(request).sdk.nodes()
    except CreditShareError as exc:
        problem = str(exc)
    for row in rows:
        when = row.get("last_answer_at")
        if isinstance(when, str):
            row["last_answer_at"] = utc_time(when)
    return page(
        request, "operator/nodes.html", nodes=rows, problem=problem, ready=_readiness(request)
    )


def _readiness(request: Request) -> dict[str, Any]:
    """``/readyz`` as it answered (its body says why on 503 too), or why it did not."""
    try:
        return console_state(request).sdk.readiness()
    except CreditShareError as exc:
        return {"status": "unreachable", "error": str(exc)[:300]}


@router.get("/operator/ledger", response_class=HTMLResponse)
def ledger(request: Request) -> HTMLResponse:
    """The ledger's size and latest signed head, and the newest head the nodes cosigned."""
    head: dict[str, Any] | None = None
    problem, empty = None, False
    try:
        head = console_state(request).sdk.ledger_head()
    except ProblemError as exc:
        empty = exc.status == 404  # nothing logged yet: no head to sign
        problem = None if empty else str(exc)
    except CreditShareError as exc:
        problem = str(exc)
    if head is not None:
        head["signed_at"] = utc_time(head["timestamp_ms"] / 1000)
        witnessed = head.get("witnessed_head")
        if witnessed:
            witnessed["signed_at"] = utc_time(witnessed["timestamp_ms"] / 1000)
        for cosignature in head.get("cosignatures") or []:
            cosignature["cosigned_at"] = utc_time(cosignature["timestamp"])
    return page(request, "operator/ledger.html", head=head, problem=problem, empty=empty)


@router.get("/operator/metrics", response_class=HTMLResponse)
def metrics(request: Request) -> HTMLResponse:
    """Where the coordinator's Prometheus metrics are, whether reading them needs the
    operator's key (the ``metrics_require_operator_key`` setting), and what they say now."""
    state = console_state(request)
    url = _coordinator(request) + "/metrics"
    exposition, problem = "", None
    try:
        exposition = state.sdk.metrics_text()
    except CreditShareError as exc:
        problem = str(exc)[:300]
    needs_key = _metrics_need_key(url)
    lines = exposition.splitlines()
    return page(
        request,
        "operator/metrics.html",
        url=url,
        needs_key=needs_key,
        problem=problem,
        metrics="\n".join(lines[:METRICS_LINES]),
        more=max(0, len(lines) - METRICS_LINES),
        families=sum(1 for line in lines if line.startswith("# TYPE ")),
    )


def _metrics_need_key(url: str) -> bool | None:
    """Whether the coordinator refuses its metrics to a caller without a key (the
    ``metrics_require_operator_key`` setting); None if that cannot be told now."""
    with CreditShareClient(url.removesuffix("/metrics"), timeout=HTTP_TIMEOUT_SECONDS) as anon:
        try:
            anon.metrics_text()
        except ProblemError as exc:
            return True if exc.status in (401, 403) else None
        except CreditShareError:
            return None
    return False


def _coordinator(request: Request) -> str:
    return (console_state(request).settings.coordinator_url or "").rstrip("/")
