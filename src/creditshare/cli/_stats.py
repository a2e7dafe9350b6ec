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
        writer.writerows(answer.rows())
        return
    print_cohort(answer)


def print_cohort(answer: CohortAnswer) -> None:
    """The figures as a table (value ± bound, suppressed cells as such), then what the
    query spent, where it is recorded and which nodes' parts are missing."""
    q = answer.query
    rows = answer.rows()
    dimensions = list(q.group_by)
    print_table(
        [
            ("date", lambda r: r["date"] or "latest"),
            *[(d, _field(d)) for d in dimensions],
            ("measure", lambda r: r["measure"]),
            ("level", lambda r: r["level"]),
            (f"value ± bound ({answer.confidence:.0%})", _figure),
            ("withheld at (nodes)", lambda r: r["withheld_at"] or None),
        ],
        rows,
        empty="no cells",
        title=f"{q.department}: {', '.join(q.chains)}",
    )
    suppressed = len({(r["date"], *(r[d] for d in dimensions)) for r in rows if r["suppressed"]})
    console.print(
        f"ε {q.epsilon:g} spent at each of {answer.additions} nodes (ledger entry "
        f"{answer.ledger_index}); cells below {q.min_cell} enterprises suppressed: {suppressed}",
        markup=False,
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
    print_table(
        [(name, _field(name)) for name in ("column", "lower", "upper", "unit")],
        catalogue["sums"],
        empty="no summable columns",
        title=f"{department}: columns (sum, mean; clipped to [lower, upper], in units)",
    )
    nodes = ", ".join(str(n) for n in raw.get("nodes") or []) or "-"
    console.print(f"digest {raw['digest']}; published by {nodes}", markup=False)


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
