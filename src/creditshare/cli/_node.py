"""``creditshare node ...``: run or load a department's data node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from creditshare._logging import configure_logging
from creditshare._settings import load_settings
from creditshare.cli._common import ConfigOption, JsonOption, console, print_json, print_table, when

__all__ = ["node_app"]

node_app = typer.Typer(no_args_is_help=True, help="Run or load a department's data node.")


@node_app.command("serve")
def node_serve(config: ConfigOption) -> None:
    """Serve the node's gRPC API until SIGTERM."""
    from creditshare.node import NodeSettings, serve

    settings = load_settings(NodeSettings, config)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


@node_app.command("import")
def node_import(
    config: ConfigOption,
    files: Annotated[
        list[Path], typer.Argument(help="CSV files: together, the department's complete records")
    ],
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty",
            help="accept a snapshot that removes every current record (refused otherwise)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Import a snapshot: the files are the department's complete current records.

    Records are added, changed or removed to match them, in one transaction: all of it
    lands, or nothing (a bad row is named by file and line). The values a changed or
    removed record had are kept for change detection.
    """
    from creditshare.node import NodeSettings, import_into_node

    summary = import_into_node(load_settings(NodeSettings, config), files, allow_empty=allow_empty)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
        return
    console.print(
        f"snapshot {summary.batch_id}: {summary.rows} records from {len(summary.files)} "
        f"file(s) (sha256 {summary.sha256[:16]}…)\n"
        f"{summary.added} added, {summary.changed} changed, {summary.removed} removed, "
        f"{summary.unchanged} unchanged",
        markup=False,
        soft_wrap=True,
    )


@node_app.command("imports")
def node_imports(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List the snapshots imported into this node, newest first, with what each changed
    (counts are "-" for snapshots imported before they were recorded)."""
    from creditshare.node import NodeSettings, import_history

    batches = import_history(load_settings(NodeSettings, config), limit)
    doc: list[dict[str, Any]] = [
        {
            "snapshot": b.id,
            "imported_at": b.imported_at.isoformat(),
            "files": b.files.split(";"),
            "sha256": b.sha256,
            "rows": b.rows,
            "added": b.added,
            "changed": b.changed,
            "removed": b.removed,
            "unchanged": b.unchanged,
        }
        for b in batches
    ]
    if as_json:
        print_json(doc)
        return
    print_table(
        [
            ("snapshot", lambda b: b["snapshot"]),
            ("imported", lambda b: when(b["imported_at"])),
            ("records", lambda b: b["rows"]),
            ("added", lambda b: b["added"]),
            ("changed", lambda b: b["changed"]),
            ("removed", lambda b: b["removed"]),
            ("unchanged", lambda b: b["unchanged"]),
            ("sha256", lambda b: b["sha256"][:16]),
            ("files", lambda b: "; ".join(b["files"])),
        ],
        doc,
        empty="no snapshots imported",
    )


@node_app.command("refusals")
def node_refusals(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List the requests this node refused, newest first: forged or altered consents,
    swapped keys, revoked credentials, replays, a stale revocation list. Each is an
    attempt worth a look."""
    from creditshare.node import NodeSettings, refusal_log_entries

    rows = refusal_log_entries(load_settings(NodeSettings, config), limit)
    doc = [
        {
            "refused_at": row.refused_at.isoformat(),
            "rpc": row.rpc,
            "status": row.status,
            "request_id": row.request_id,
            "reason": row.reason,
        }
        for row in rows
    ]
    if as_json:
        print_json(doc)
        return
    print_table(
        [
            ("refused", lambda r: when(r["refused_at"])),
            ("call", lambda r: r["rpc"]),
            ("status", lambda r: r["status"]),
            ("request", lambda r: r["request_id"]),
            ("reason", lambda r: r["reason"]),
        ],
        doc,
        empty="no refused requests",
    )


@node_app.command("privacy-budget")
def node_privacy_budget(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1, help="spends listed one by one (--json)")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Show what the statistics queries spent of this node's privacy budget per period:
    all regulators together (of stats_epsilon_total_per_period) and each regulator (of
    stats_epsilon_per_period), and what is left."""
    from creditshare.node import NodeSettings, privacy_spend_entries

    settings = load_settings(NodeSettings, config)
    totals, period_totals, rows = privacy_spend_entries(settings, limit)
    allowance = settings.stats_epsilon_per_period
    total = settings.stats_epsilon_total_per_period

    def left(cap: float, spent: float) -> float:
        return max(0, round(cap * 1000) - round(spent * 1000)) / 1000

    node_left = {t.period: left(total, t.spent) for t in period_totals}
    node: list[dict[str, Any]] = [
        {"period": t.period, "queries": t.queries, "spent": t.spent, "left": node_left[t.period]}
        for t in period_totals
    ]
    budgets: list[dict[str, Any]] = [
        {
            "regulator": t.regulator,
            "period": t.period,
            "queries": t.queries,
            "spent": t.spent,
            # A regulator may spend what is left of its own allowance and of the node's.
            "left": min(left(allowance, t.spent), node_left[t.period]),
        }
        for t in totals
    ]
    doc = {
        "allowance": allowance,
        "total_allowance": total,
        "period": settings.stats_budget_period,
        "regulators": settings.stats_regulators or None,
        "node": node,
        "budgets": budgets,
        "spends": [
            {
                "ledger_index": row.leaf_index,
                "spent_at": row.spent_at.isoformat(),
                "regulator": row.requester,
                "period": row.period,
                "epsilon": row.epsilon,
            }
            for row in rows
        ],
    }
    if as_json:
        print_json(doc)
        return
    print_table(
        [
            ("period", lambda r: r["period"]),
            ("queries (all regulators)", lambda r: r["queries"]),
            ("ε spent (all regulators)", lambda r: f"{r['spent']:g}"),
            (f"node's ε left of {total:g}", lambda r: f"{r['left']:g}"),
        ],
        node,
        empty="no statistics query answered",
    )
    if not budgets:
        return
    typer.echo()
    print_table(
        [
            ("regulator", lambda r: r["regulator"]),
            ("period", lambda r: r["period"]),
            ("queries", lambda r: r["queries"]),
            ("ε spent", lambda r: f"{r['spent']:g}"),
            (f"ε left of {allowance:g}", lambda r: f"{r['left']:g}"),
        ],
        budgets,
        empty="no statistics query answered",
    )


@node_app.command("access-log")
def node_access_log(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List what this node answered, newest first (ledger index, requester, purpose,
    consent)."""
    from creditshare.node import NodeSettings, access_log_entries

    rows = access_log_entries(load_settings(NodeSettings, config), limit)
    doc = [
        {
            "ledger_index": row.leaf_index,
            "answered_at": row.answered_at.isoformat(),
            "uscc": row.uscc,
            "requester": row.requester,
            "purpose": row.purpose,
            "consent_id": row.consent_id,
            "model_id": row.model_id,
        }
        for row in rows
    ]
    if as_json:
        print_json(doc)
        return
    print_table(
        [
            ("ledger index", lambda r: r["ledger_index"]),
            ("answered", lambda r: when(r["answered_at"])),
            ("uscc", lambda r: r["uscc"]),
            ("requester", lambda r: r["requester"]),
            ("purpose", lambda r: r["purpose"]),
            ("consent", lambda r: r["consent_id"]),
        ],
        doc,
        empty="no answered requests",
    )


@node_app.command("witness-key")
def node_witness_key(
    out: Annotated[Path, typer.Option(help="where to keep the witness key (PEM, mode 0600)")],
    node_id: Annotated[str, typer.Option(help="this node's id: the witness's name")],
) -> None:
    """Make this node's witness key (on the node itself) and print its vkey for clients.

    Set the node's ``witness_key_file`` to OUT; give the printed vkey to banks and
    enterprises (``--witness``). An existing key is kept, never overwritten: its vkey is
    printed again.
    """
    from creditshare.ledger import WitnessKey
    from creditshare.node import generate_witness_key, load_witness_key

    if out.exists():
        key = load_witness_key(out)
        console.print(f"{out} exists (kept); its vkey:")
    else:
        key = generate_witness_key(out)
        console.print(f"witness key written to {out} (mode 0600); its vkey:")
    print(WitnessKey(node_id, key.verify_key.raw).vkey())
