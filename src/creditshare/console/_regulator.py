"""The regulator's page: cohort statistics of one department, grouped, with error bars.

The query is signed, sent and its summed answer decrypted here, in the console, with the
regulator's own keys (the SDK's ``run_cohort_query``: ``cohort_statistics`` with where
the ledger records the query and each node's part): the coordinator adds ciphertexts
it cannot read and the browser gets the figures, never a key. Every figure the nodes
released is noisy (each node adds discrete Laplace noise for its own part), so the page
shows each one as value ± bound at the stated confidence, with its error bar, and a
cell whose noisy count fell below the minimum as suppressed, never as a number. The
budget shown is what the ledger records this regulator spent; the nodes enforce it.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from creditshare.client import CohortAnswer
from creditshare.console._format import text
from creditshare.console._forms import FormErrors
from creditshare.console._profile_view import (
    Placement,
    chain_options,
    errors_for,
    form_list,
    message_of,
)
from creditshare.console._render import page
from creditshare.console._state import ConsoleState, console_state
from creditshare.departments import DEPARTMENTS
from creditshare.errors import CreditShareError, ProblemError
from creditshare.statistics import Catalogue, CohortResult

__all__ = [
    "NAVIGATION",
    "BudgetRow",
    "CatalogueView",
    "FigureRow",
    "MeasureTable",
    "budget_rows",
    "catalogue_view",
    "result_tables",
    "router",
]

router = APIRouter()

NAVIGATION: list[tuple[str, str]] = [("/regulator/statistics", "regulator.nav_statistics")]

#: The query's limits (the contract's; the SDK and the nodes check them too, this only
#: says so next to the field before a round trip).
MAX_GROUP_BY = 4
MAX_MEASURES = 8
MAX_DATES = 12
MAX_EPSILON = 10.0
MIN_CELL_RANGE = (1, 1000)
DEFAULT_EPSILON = "1"
DEFAULT_MIN_CELL = "10"
CONFIDENCE = 0.95
#: The error bar's drawing width in SVG units (a figure's bar is scaled within its table).
BAR_WIDTH = 160

_FIELDS = ("department", "group_by", "measures", "dates", "chains", "epsilon", "min_cell")


def _budget_refusal(exc: ProblemError) -> bool:
    """Every node refused for the privacy budget: the ε asked is what must change."""
    return exc.status == 403 and "budget" in f"{exc.title} {exc.detail}".lower()


_PLACEMENTS: list[Placement] = [(_budget_refusal, "epsilon")]


@dataclass(frozen=True)
class CatalogueView:
    """What the form may offer for one department (its catalogue, as the nodes publish it)."""

    department: str
    #: (dimension, its public levels), chain and region included.
    dimensions: list[tuple[str, list[str]]] = field(default_factory=list)
    #: (column, unit) of every column a query may sum or average.
    sums: list[tuple[str, str]] = field(default_factory=list)
    digest: str = ""

    @property
    def measures(self) -> list[str]:
        return [
            "count",
            *(f"{kind}:{column}" for column, _ in self.sums for kind in ("sum", "mean")),
            *(f"distribution:{name}" for name, _ in self.dimensions),
        ]


def catalogue_view(catalogue: Catalogue) -> CatalogueView:
    """The department's catalogue (as the SDK validated it) as the form's choices."""
    return CatalogueView(
        catalogue.department,
        [(d.name, list(d.levels)) for d in catalogue.dimensions],
        [(c.column, _plain(c.unit)) for c in catalogue.sums],
        catalogue.digest,
    )


def _plain(value: Any) -> str:
    """A number as a person writes it (1 not 1.0; 10,000 not 10000)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isfinite(number) and number == round(number):
        return f"{int(number):,}"
    return f"{number:,.2f}"


@dataclass(frozen=True)
class Bar:
    """An error bar in SVG units: the interval [low, high], the value and zero."""

    low: float
    high: float
    value: float
    zero: float


@dataclass(frozen=True)
class FigureRow:
    """One released figure: its cell (date and group levels), the distribution's level
    if any, and value ± bound, or suppressed."""

    date: str
    group: list[str]
    level: str
    value: float
    bound: float
    suppressed: bool
    withheld_at: int
    bar: Bar | None = None

    @property
    def shown_value(self) -> str:
        return _plain(round(self.value, 2))

    @property
    def shown_bound(self) -> str:
        return _plain(round(self.bound, 2))


@dataclass(frozen=True)
class MeasureTable:
    """Every cell's figure of one measure (``count``, ``sum:x``, ``mean:x``,
    ``distribution:d``), its error bars drawn on one scale."""

    measure: str
    kind: str
    name: str
    rows: list[FigureRow]

    @property
    def has_level(self) -> bool:
        return self.kind == "distribution"


def _with_bars(rows: list[FigureRow]) -> list[FigureRow]:
    """The rows with error bars on one scale: from the lowest interval end (or zero)
    to the highest, so bars of one table compare at a glance."""
    shown = [r for r in rows if not r.suppressed]
    if not shown:
        return rows
    low = min(0.0, *(r.value - r.bound for r in shown))
    high = max(0.0, *(r.value + r.bound for r in shown))
    span = (high - low) or 1.0

    def x(v: float) -> float:
        return round(2 + (BAR_WIDTH - 4) * (v - low) / span, 1)

    return [
        r
        if r.suppressed
        else FigureRow(
            r.date,
            r.group,
            r.level,
            r.value,
            r.bound,
            r.suppressed,
            r.withheld_at,
            Bar(x(r.value - r.bound), x(r.value + r.bound), x(r.value), x(0.0)),
        )
        for r in rows
    ]


def result_tables(
    result: CohortResult, group_by: Sequence[str], measures: Sequence[str]
) -> list[MeasureTable]:
    """The decoded figures as one table per measure (the count first), cells in the
    result's order (the layout's: dates, then the group's levels)."""
    order = ["count", *(m for m in measures if m != "count")]
    tables: list[MeasureTable] = []
    for measure in order:
        kind, _, name = measure.partition(":")
        rows: list[FigureRow] = []
        for cell in result.cells:
            date_, group = cell.date, [cell.group.get(d, "") for d in group_by]
            figure = cell.count if measure == "count" else cell.measures.get(measure)
            items = figure.items() if isinstance(figure, dict) else [("", figure)]
            for level, item in items:
                if item is None:
                    continue
                rows.append(
                    FigureRow(
                        date_,
                        group,
                        level,
                        item.value,
                        item.bound,
                        # A distribution level is held to the minimum on its own count, so
                        # it may be suppressed (or withheld by more nodes) in a shown cell.
                        cell.suppressed or item.suppressed,
                        max(cell.withheld_at, item.withheld_at),
                    )
                )
        tables.append(MeasureTable(measure, kind, name, _with_bars(rows)))
    return tables


@dataclass(frozen=True)
class BudgetRow:
    period: str
    spent: str
    allowance: str
    remaining: str
    queries: str


def budget_rows(answer: dict[str, Any], allowance: float | None = None) -> list[BudgetRow]:
    """The SDK's ``privacy_budget()`` (``periods``: per period the ε this regulator's
    recorded queries spent, and how many) as rows, with what remains of ``allowance``
    (the nodes' allowance per period, as published)."""
    rows = []
    for item in answer.get("periods") or ():
        spent = float(item.get("epsilon", 0.0))
        remaining = None if allowance is None else max(0.0, allowance - spent)
        rows.append(
            BudgetRow(
                str(item.get("period", "")),
                _epsilon(spent),
                _epsilon(allowance),
                _epsilon(remaining),
                str(item.get("queries", "")),
            )
        )
    return rows


def _epsilon(value: Any) -> str:
    if value is None or value == "":
        return ""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _departments(state: ConsoleState) -> list[str]:
    """The departments with data nodes (the built-in ones if the coordinator cannot
    list its nodes to this participant)."""
    listing = getattr(state.client, "nodes", None)
    present: list[str] = []
    if listing is not None:
        try:
            present = sorted({str(node.get("department")) for node in listing()})
        except CreditShareError:
            present = []
    if not present:
        return list(DEPARTMENTS)
    # The built-in departments first, in their usual order (tax first), then the others.
    return [d for d in DEPARTMENTS if d in present] + [d for d in present if d not in DEPARTMENTS]


def _catalogue(state: ConsoleState, department: str) -> tuple[CatalogueView | None, str]:
    try:
        return catalogue_view(state.sdk.statistics_catalogue(department)), ""
    except CreditShareError as exc:
        return None, message_of(exc)


def _budget(state: ConsoleState) -> tuple[list[BudgetRow], str]:
    try:
        answer = state.sdk.privacy_budget()
        return budget_rows(answer, state.settings.privacy_allowance), ""
    except CreditShareError as exc:
        return [], message_of(exc)


def _statistics_page(
    request: Request,
    values: dict[str, Any],
    *,
    errors: FormErrors | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    state = console_state(request)
    departments = _departments(state)
    if values["department"] not in departments:
        departments.append(values["department"])
    catalogue, catalogue_problem = _catalogue(state, values["department"])
    budget, budget_problem = _budget(state)
    return page(
        request,
        "regulator/statistics.html",
        status_code=status_code,
        errors=errors,
        values=values,
        departments=departments,
        catalogue=catalogue,
        catalogue_problem=catalogue_problem,
        chains=chain_options(state.client),
        budget=budget,
        budget_problem=budget_problem,
        allowance=_epsilon(state.settings.privacy_allowance),
        confidence=f"{CONFIDENCE:.0%}",
        limits={
            "group_by": MAX_GROUP_BY,
            "measures": MAX_MEASURES,
            "dates": MAX_DATES,
            "epsilon": _plain(MAX_EPSILON),
            "min_cell": MIN_CELL_RANGE,
        },
        **context,
    )


def _initial(department: str) -> dict[str, Any]:
    return {
        "department": department,
        "group_by": ["region"],
        "measures": ["count"],
        "dates": "",
        "chains": [],
        "epsilon": DEFAULT_EPSILON,
        "min_cell": DEFAULT_MIN_CELL,
    }


@router.get("/regulator/statistics", response_class=HTMLResponse)
def statistics_form(request: Request, department: str = "") -> HTMLResponse:
    """The query form for ``department`` (its catalogue's dimensions and columns; the
    department selector reloads it), and the budget spent so far."""
    chosen = department.strip() or _departments(console_state(request))[0]
    return _statistics_page(request, _initial(chosen))


_DATE_SEPARATORS = re.compile(r"[\s,，;；]+")


def parse_dates(given: str) -> tuple[list[str], str]:
    """The dates typed (ISO, separated by spaces or commas) sorted and distinct, or what
    is wrong with the first bad one; none means each node's latest snapshot."""
    dates: set[date] = set()
    for part in (p for p in _DATE_SEPARATORS.split(given.strip()) if p):
        try:
            dates.add(date.fromisoformat(part))
        except ValueError:
            return [], part
    return [d.isoformat() for d in sorted(dates)], ""


def _checked(request: Request, values: dict[str, Any]) -> tuple[FormErrors, list[str], float, int]:
    """What is wrong with the form before any round trip, field by field."""
    errors = FormErrors()
    if not values["department"]:
        errors.add("department", text(request, "regulator.department_required"))
    if len(values["group_by"]) > MAX_GROUP_BY:
        errors.add("group_by", text(request, "regulator.group_by_too_many", limit=MAX_GROUP_BY))
    if not values["measures"]:
        errors.add("measures", text(request, "regulator.measures_required"))
    elif len(values["measures"]) > MAX_MEASURES:
        errors.add("measures", text(request, "regulator.measures_too_many", limit=MAX_MEASURES))
    dates, bad = parse_dates(values["dates"])
    if bad:
        errors.add("dates", text(request, "regulator.date_invalid", value=bad))
    elif len(dates) > MAX_DATES:
        errors.add("dates", text(request, "regulator.dates_too_many", limit=MAX_DATES))
    epsilon = math.nan
    with contextlib.suppress(ValueError):
        epsilon = float(values["epsilon"])
    if not (0 < epsilon <= MAX_EPSILON) or round(epsilon, 3) != epsilon:
        errors.add("epsilon", text(request, "regulator.epsilon_invalid", limit=_plain(MAX_EPSILON)))
    min_cell = 0
    with contextlib.suppress(ValueError):
        min_cell = int(values["min_cell"])
    low, high = MIN_CELL_RANGE
    if not low <= min_cell <= high:
        errors.add("min_cell", text(request, "regulator.min_cell_invalid", low=low, high=high))
    return errors, dates, epsilon, min_cell


def _field_of(message: str) -> str | None:
    """The form field an SDK check names at the start of its message (``epsilon: ...``)."""
    head = re.split(r"[:\s]", message.strip(), maxsplit=1)[0]
    return head if head in _FIELDS else None


@router.post("/regulator/statistics", response_class=HTMLResponse)
def run_statistics(
    request: Request,
    department: Annotated[str, Form()] = "",
    group_by: Annotated[list[str] | None, Form()] = None,
    measures: Annotated[list[str] | None, Form()] = None,
    dates: Annotated[str, Form()] = "",
    chains: Annotated[list[str] | None, Form()] = None,
    epsilon: Annotated[str, Form()] = DEFAULT_EPSILON,
    min_cell: Annotated[str, Form()] = DEFAULT_MIN_CELL,
) -> HTMLResponse:
    """Sign the cohort query, let the nodes answer, decrypt and decode here; show each
    figure with its error bar. A refusal goes next to the field it concerns."""
    state = console_state(request)
    values: dict[str, Any] = {
        "department": department.strip(),
        "group_by": form_list(group_by or []),
        "measures": form_list(measures or []),
        "dates": dates.strip(),
        "chains": form_list(chains or []),
        "epsilon": epsilon.strip(),
        "min_cell": min_cell.strip(),
    }
    errors, chosen_dates, eps, cell = _checked(request, values)
    if errors:
        return _statistics_page(request, values, errors=errors, status_code=422)
    values["dates"] = ", ".join(chosen_dates)
    try:
        answer = state.sdk.run_cohort_query(
            values["department"],
            group_by=values["group_by"],
            measures=values["measures"],
            dates=chosen_dates or None,
            chains=values["chains"] or None,
            epsilon=eps,
            min_cell=cell,
            confidence=CONFIDENCE,
        )
    except ProblemError as exc:
        errors = errors_for(exc, _FIELDS, _PLACEMENTS)
        return _statistics_page(request, values, errors=errors, status_code=422)
    except CreditShareError as exc:
        errors = FormErrors()
        errors.add(_field_of(str(exc)), str(exc))
        return _statistics_page(request, values, errors=errors, status_code=422)
    return _statistics_page(
        request,
        values,
        result=result_tables(answer.result, values["group_by"], values["measures"]),
        result_nodes=_node_rows(answer),
        result_meta=_meta(answer, eps, cell),
    )


def _node_rows(answer: CohortAnswer) -> list[dict[str, str]]:
    """Each node's part in the answer: ok, refused or failed, and why."""
    return [
        {"node": n.node_id, "chain": n.chain, "status": n.status, "reason": n.reason}
        for n in answer.nodes
    ]


def _meta(answer: CohortAnswer, epsilon: float, min_cell: int) -> dict[str, str]:
    return {
        "query_id": str(answer.query_id),
        "ledger_index": str(answer.ledger_index),
        "epsilon": f"{epsilon:g}",
        "min_cell": str(min_cell),
    }
