"""``creditshare stats ...``: a regulator's cohort statistics (query, catalogue, budget).

Every figure comes back as value ± bound: the bound holds at the stated confidence
(default 0.95) and is conservative. A suppressed cell (too few enterprises by the
nodes' noisy counts) is printed as such, never as a number.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    ChainName,
    IdentityOption,
    JsonOption,
    KeyFileOption,
    chain_values,
    console,
    paillier_key,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from creditshare.client import CohortAnswer

__all__ = ["print_cohort", "stats_app"]

stats_app = typer.Typer(
    no_args_is_help=True,
    help="A regulator's cohort statistics: noisy, encrypted, budgeted by the nodes.",
)

CoordinatorOpt = Annotated[str, typer.Option("--coordinator", help="coordinator base URL")]
DepartmentOpt = Annotated[
    str, typer.Option("--department", help="department type: tax, social, market, court, ...")
]


def _field(name: str) -> Callable[[dict[str, Any]], object]:
    """A table column's value: the row's ``name`` (None shows as "-")."""
    return lambda row: row.get(name)


def _figure(row: dict[str, Any]) -> str:
    if row.get("not_asked"):
        return "not asked"
    if row["suppressed"]:
        return "suppressed"
    value, bound = float(row["value"]), float(row["bound"])
    if row["measure"].startswith("mean:"):
        return f"{value:,.2f} ± {bound:,.2f}"
    return f"{value:,.0f} ± {bound:,.0f}"


@stats_app.command("query")
def stats_query(
    coordinator: CoordinatorOpt,
    api_key: ApiKeyOption,
    identity: IdentityOption,
    department: DepartmentOpt,
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by",
            help="dimensions to group by, comma-separated (up to 4): chain, region and the "
            "department's own (`creditshare stats catalogue` lists them); empty: one cell",
        ),
    ] = "",
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            help="count, sum:<column>, mean:<column> or distribution:<dimension> "
            "(repeatable, up to 8; default count)",
        ),
    ] = None,
    date: Annotated[
        list[str] | None,
        typer.Option(
            "--date",
            help="a snapshot date YYYY-MM-DD (repeatable, up to 12): the snapshot in force "
            "at the end of that UTC day at each node; default each node's latest",
        ),
    ] = None,
    chain: Annotated[
        list[ChainName] | None, typer.Option(help="a chain in scope (repeatable; default all)")
    ] = None,
    epsilon: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=10.0,
            help="privacy budget this query spends at every node (smaller: noisier)",
        ),
    ] = 1.0,
    min_cell: Annotated[
        int,
        typer.Option(min=1, max=1000, help="suppress cells with fewer enterprises (noisy count)"),
    ] = 10,
    confidence: Annotated[
        float,
        typer.Option(min=0.5, max=0.999999, help="probability each error bound holds"),
    ] = 0.95,
    key_file: KeyFileOption = None,
    as_json: JsonOption = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="print CSV (one row per cell and figure)")
    ] = False,
) -> None:
    """Run a cohort query; prints every figure as value ± bound, suppressed cells as such."""
    from creditshare.client import CreditShareClient, Identity

    if as_json and as_csv:
        raise typer.BadParameter("give at most one of --json and --csv")
    key = paillier_key(key_file)
    with CreditShareClient(
        coordinator, api_key=api_key, private_key=key, identity=Identity.load(identity)
    ) as client:
        answer = client.run_cohort_query(
            department,
            group_by=group_by,
            measures=measure or ["count"],
            dates=date,
            chains=chain_values(chain),
            epsilon=epsilon,
            min_cell=min_cell,
            confidence=confidence,
        )
    if as_json:
        print_json(answer.to_json())
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=answer.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in answer.rows())
        return
    print_cohort(answer)


def _empty_dates(
    cells: list[dict[str, Any]], by_chain: dict[str, int] | None, answer: CohortAnswer
) -> list[str]:
    """Dates at which every answering node withheld every cell asked while some other
    date has a released cell: the likely mark of dates with no snapshot (the answer does
    not say why a node withheld, so this is a hint, not a finding)."""

    def all_withheld(row: dict[str, Any]) -> bool:
        nodes = by_chain.get(row["chain"], 0) if by_chain is not None else answer.additions
        return bool(row["suppressed"]) and row["withheld_here"] >= nodes

    asked = [r for r in cells if not r["not_asked"]]
    dates = sorted({r["date"] for r in asked if r["date"]})
    empty = [d for d in dates if all(all_withheld(r) for r in asked if r["date"] == d)]
    return empty if len(empty) < len(dates) else []


def _csv_value(value: object) -> object:
    """A CSV cell: booleans as true/false, whole numbers without ".0" (a count of 13 is
    13, not 13.0), None as empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: _csv_value(value) for name, value in row.items()}


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


def _cells(count: int) -> str:
    return "1 cell" if count == 1 else f"{count} cells"


def print_cohort(answer: CohortAnswer) -> None:
    """The figures as a table (value ± bound, suppressed cells as such), then what the
    query spent, where it is recorded and which nodes' parts are missing."""
    q = answer.query
    rows = answer.rows()
    dimensions = list(q.group_by)
    by_chain = "chain" in dimensions
    # Grouped by chain, a node withholds every cell of another chain (public zeros), so
    # the table counts only the answering nodes of the cell's own chain that withheld it;
    # a chain the query did not name was asked of no node at all.
    answering: dict[str, int] = {}
    for node in answer.nodes:
        if node.status == "ok":
            answering[node.chain] = answering.get(node.chain, 0) + 1
    for row in rows:
        if by_chain:
            chain = row["chain"]
            row["not_asked"] = chain not in q.chains
            row["withheld_here"] = max(
                0, int(row["withheld_at"]) - (answer.additions - answering.get(chain, 0))
            )
        else:
            row["not_asked"] = False
            row["withheld_here"] = int(row["withheld_at"])
    print_table(
        [
            ("date", lambda r: r["date"] or "latest"),
            *[(d, _field(d)) for d in dimensions],
            ("measure", lambda r: r["measure"]),
            ("level", lambda r: r["level"]),
            (f"value ± bound ({answer.confidence:.0%})", _figure),
            (
                "withheld at (nodes)",
                lambda r: None if r["not_asked"] else (r["withheld_here"] or None),
            ),
        ],
        rows,
        empty="no cells",
        title=f"{q.department}: {', '.join(q.chains)}",
    )
    # A cell's own status is its count's (a distribution level may be held on its own).
    cells = {(r["date"], *(r[d] for d in dimensions)): r for r in rows if r["measure"] == "count"}
    suppressed = sum(1 for r in cells.values() if r["suppressed"] and not r["not_asked"])
    not_asked = sum(1 for r in cells.values() if r["not_asked"])
    each = "at the 1 node" if answer.additions == 1 else f"at each of {answer.additions} nodes"
    console.print(
        f"ε {q.epsilon:g} spent {each} that answered (ledger entry {answer.ledger_index}); "
        f"suppressed: {_cells(suppressed)}"
        + (f"; not asked (a chain outside the query): {_cells(not_asked)}" if not_asked else ""),
        markup=False,
        soft_wrap=True,
    )
    if any(r["suppressed"] and not r["not_asked"] for r in rows):
        console.print(
            "suppressed: no figure was released. A node withholds its part of a cell (or of a "
            f"distribution level) when its noisy count is below the minimum ({q.min_cell}, or "
            "the node's own if larger) or when it has no snapshot in force at that date; the "
            "answer counts the nodes that withheld (the last column) but cannot tell these "
            "two causes apart. A figure is also suppressed when the released parts total "
            f"below {q.min_cell}.",
            markup=False,
            soft_wrap=True,
        )
    for day in _empty_dates(list(cells.values()), answering if by_chain else None, answer):
        console.print(
            f"{day}: every answering node withheld every cell while other dates have figures; "
            "most likely no node had a snapshot in force then (a date before its first import)",
            markup=False,
            soft_wrap=True,
        )
    for node in answer.left_out:
        console.print(
            f"left out: {node.node_id} ({node.chain}) {node.status}: {node.reason}", markup=False
        )


@stats_app.command("catalogue")
def stats_catalogue(
    coordinator: CoordinatorOpt,
    api_key: ApiKeyOption,
    department: DepartmentOpt,
    as_json: JsonOption = False,
) -> None:
    """What a cohort query of a department may group by and sum, as its nodes publish it."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        raw = client.statistics_catalogue_raw(department)  # checked against its digest
    if as_json:
        print_json(raw)
        return
    catalogue = raw["catalogue"]
    print_table(
        [("dimension", _field("name")), ("levels", lambda d: ", ".join(d["levels"]))],
        catalogue["dimensions"],
        title=f"{department}: dimensions (group by, distribution)",
    )
    names = _unit_names(department)
    print_table(
        [
            ("column", _field("column")),
            ("lower", _field("lower")),
            ("upper", _field("upper")),
            ("rounded to", lambda c: _unit(c, names)),
        ],
        catalogue["sums"],
        empty="no summable columns",
        title=f"{department}: columns (sum, mean)",
    )
    if catalogue["sums"]:
        console.print(
            "each value is clipped to lower..upper, then rounded to whole units of the last "
            "column, before it is summed",
            markup=False,
            soft_wrap=True,
        )
    nodes = ", ".join(str(n) for n in raw.get("nodes") or []) or "-"
    console.print(f"digest {raw['digest']}; published by {nodes}", markup=False)


def _unit_names(department: str) -> dict[str, str]:
    """What each column of a built-in department is measured in ("CNY", "persons"), from
    its schema; a department a chain added itself is not known here (no names)."""
    from creditshare.departments import get_department

    try:
        schema = get_department(department)
    except KeyError:
        return {}
    return {f.name: f.unit for f in schema.fields if f.unit}


def _unit(column: dict[str, Any], names: dict[str, str]) -> str:
    """A column's rounding unit with what it counts: "1000 CNY", "1 persons", or "1"."""
    size = column.get("unit")
    shown = f"{size:g}" if isinstance(size, (int, float)) else str(size)
    name = names.get(str(column.get("column")), "")
    return f"{shown} {name}" if name else shown


@stats_app.command("budget")
def stats_budget(
    coordinator: CoordinatorOpt,
    api_key: ApiKeyOption,
    as_json: JsonOption = False,
) -> None:
    """The ε your recorded statistics queries spent, per period, as the ledger shows it."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        body = client.privacy_budget()
    if as_json:
        print_json(body)
        return
    periods = body.get("periods") if isinstance(body, dict) else body
    rows = [p for p in periods or [] if isinstance(p, dict)]
    columns = list(dict.fromkeys(k for p in rows for k in p))
    print_table(
        [(c.replace("_", " "), _field(c)) for c in columns],
        rows,
        empty="no statistics query recorded",
    )
    if isinstance(body, dict):
        for name, value in body.items():
            if name != "periods" and not isinstance(value, (list, dict)):
                console.print(f"{name.replace('_', ' ')}: {value}", markup=False)
