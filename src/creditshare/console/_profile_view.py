"""What the bank's and the enterprise's pages share: a decrypted profile laid out for a
loan officer, form values read back, and a refusal put on the field it concerns.

The coordinator names the field of most refusals (``field``, ``errors[].location``);
a few it answers without one (a query's consent refused, a grant's unknown grantee),
and a page then says which of its fields such a refusal is about (``Placement``), so
the message still lands next to the field the user must change, never only above the
form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditshare.client import CreditProfile
from creditshare.console._forms import FormErrors, form_errors
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import CreditShareError, ProblemError
from creditshare.identity import Chain, InvalidUsccError, Uscc

__all__ = [
    "CONSENTS_PAGE",
    "IndicatorRow",
    "Placement",
    "ProfileView",
    "chain_options",
    "check_uscc",
    "consents_page",
    "errors_for",
    "form_list",
    "local_error",
    "message_of",
    "profile_view",
]

#: (problem test, field): where a refusal without a named field belongs on one form.
Placement = tuple[Callable[[ProblemError], bool], str]


#: Consents one page of the bank's or enterprise's list shows.
CONSENTS_PAGE = 100


def consents_page(
    sdk: Any, before: str | None, size: int = CONSENTS_PAGE
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the caller's consents (``held_consents``, newest first) after the
    consent ``before`` (None: the newest), and the cursor of the next page (None: this
    is the last). One more than a page is asked for, so "more" is never a dead end."""
    rows: list[dict[str, Any]] = sdk.held_consents(limit=size + 1, before=before or None)
    if len(rows) > size:
        return rows[:size], str(rows[size - 1]["consent_id"])
    return rows, None


def errors_for(
    exc: CreditShareError, names: Sequence[str], placements: Iterable[Placement] = ()
) -> FormErrors:
    """``form_errors`` and then, for a refusal that named no field, the first of the
    form's ``placements`` that recognises it puts it on its field instead."""
    errors = form_errors(exc, names)
    if errors.fields or not isinstance(exc, ProblemError):
        return errors
    for test, name in placements:
        if test(exc):
            moved = FormErrors()
            for message in errors.form:
                moved.add(name, message)
            return moved
    return errors


def message_of(exc: CreditShareError) -> str:
    """What went wrong, as a person reads it (a problem's detail, not its status line)."""
    return exc.detail if isinstance(exc, ProblemError) else str(exc)


def local_error(name: str, exc: CreditShareError) -> FormErrors:
    """A check made here, before any round trip, as the error of field ``name``."""
    errors = FormErrors()
    errors.add(name, str(exc))
    return errors


def check_uscc(text: str) -> tuple[Uscc | None, str]:
    """The parsed code, or None and what is wrong with it (position and reason); an
    empty field is not an error yet (the user has not typed)."""
    text = text.strip()
    if not text:
        return None, ""
    try:
        code = Uscc.parse(text)
        code.chain  # noqa: B018 (a province outside every chain is refused here too)
    except InvalidUsccError as exc:
        return None, str(exc)
    return code, ""


def chain_options(client: Any = None) -> list[tuple[str, str]]:
    """The chains a form offers: those with data nodes (every chain if the coordinator
    cannot say), so a one-chain deployment does not offer chains it lacks."""
    present: set[str] = set()
    listing = getattr(client, "nodes", None)
    if listing is not None:
        try:
            present = {str(node.get("chain")) for node in listing()}
        except CreditShareError:
            present = set()
    return [
        (c.value, f"{c.value} · {c.display_name}")
        for c in Chain
        if not present or c.value in present
    ]


def form_list(values: Iterable[str]) -> list[str]:
    """A multi-valued form field's choices, blanks and repeats dropped, order kept."""
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


@dataclass(frozen=True)
class IndicatorRow:
    name: str
    description: str
    value: str
    band: str
    node: str


@dataclass
class ProfileView:
    """A decrypted profile as the page shows it."""

    query_id: str
    uscc: str
    model_id: str
    score: int
    probability_of_default: str
    #: chain -> department -> indicator rows (the presence flag left out: it is coverage).
    groups: dict[str, dict[str, list[IndicatorRow]]] = field(default_factory=dict)
    nodes_with_records: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    #: (node, reason) of every node that did not answer.
    failed: list[tuple[str, str]] = field(default_factory=list)


def _number(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.4f}".rstrip("0").rstrip(".")


def profile_view(profile: CreditProfile) -> ProfileView:
    view = ProfileView(
        query_id=profile.query_id,
        uscc=profile.uscc,
        model_id=profile.model_id,
        score=profile.score,
        probability_of_default=f"{profile.probability_of_default:.2%}",
        nodes_with_records=list(profile.nodes_with_records),
        answered=sorted(profile.answered),
        failed=sorted((str(f.get("node", "?")), str(f.get("reason", ""))) for f in profile.failed),
    )
    ordered = sorted(profile.indicators, key=lambda i: (i.chain, i.department, i.name, i.node))
    for indicator in ordered:
        if indicator.name == PRESENCE_INDICATOR:
            continue
        row = IndicatorRow(
            name=indicator.name,
            description=indicator.description,
            value=_number(indicator.value),
            band=indicator.label or "",
            node=indicator.node,
        )
        view.groups.setdefault(indicator.chain, {}).setdefault(indicator.department, []).append(row)
    return view
