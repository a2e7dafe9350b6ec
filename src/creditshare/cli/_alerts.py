"""``creditshare alerts ...`` (a bank's post-loan monitoring) and ``creditshare monitoring
...`` (the operator's cycles)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from creditshare.cli._common import (
    ApiKeyOption,
    ChainName,
    CoordinatorOption,
    IdentityOption,
    JsonOption,
    KeyFileOption,
    chain_values,
    console,
    print_json,
    print_table,
    when,
)

if TYPE_CHECKING:
    from creditshare.client import Alert, AlertInbox, CreditShareClient

__all__ = ["alerts_app", "monitoring_app"]

alerts_app = typer.Typer(
    no_args_is_help=True,
    help="A bank's post-loan monitoring: subscriptions, alerts (opened locally), webhooks.",
)
webhook_app = typer.Typer(no_args_is_help=True, help="Deliver alerts to a URL of the bank's.")
alerts_app.add_typer(webhook_app, name="webhook")
monitoring_app = typer.Typer(no_args_is_help=True, help="Monitoring cycles (operators).")

AlertKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--alert-key-file",
        envvar="CREDITSHARE_ALERT_KEY_FILE",
        help="the bank's X25519 alert key (default: alert-key.txt beside the Paillier key, "
        "~/.config/creditshare); created on first use, mode 0600: alerts open only with it",
    ),
]
InboxOption = Annotated[
    Path | None,
    typer.Option(
        help="JSON file remembering the cursor reached and the events shown, so the next "
        "run shows only new ones (default: none, read from --since or the start)"
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="a cursor (alerts after it) or an ISO time (alerts stored since then)"),
]


def _client(
    coordinator: str,
    api_key: str,
    alert_key_file: Path | None = None,
    identity: Path | None = None,
    key_file: Path | None = None,
    create_key: bool = False,
) -> CreditShareClient:
    """The bank's client; its Paillier key (score_change scores) is created only when
    subscribing to score_change, else loaded if the bank has one."""
    from creditshare.client import (
        CreditShareClient,
        Identity,
        default_alert_key_path,
        default_key_path,
        load_key,
        load_or_create_alert_key,
        load_or_create_key,
    )

    path = key_file or default_key_path()
    private_key = (
        load_or_create_key(path) if create_key else load_key(path) if path.exists() else None
    )
    return CreditShareClient(
        coordinator,
        api_key=api_key,
        private_key=private_key,
        identity=Identity.load(identity) if identity is not None else None,
        alert_key=load_or_create_alert_key(alert_key_file or default_alert_key_path(key_file)),
    )


def _signals(values: list[str]) -> dict[str, int | None]:
    """``court_judgment`` or ``court_judgment=2`` (repeatable) as {type: threshold}."""
    out: dict[str, int | None] = {}
    for value in values:
        name, sep, threshold = value.partition("=")
        if sep and not threshold.strip().isdigit():
            raise typer.BadParameter(f"--signal {value}: the threshold after '=' is a number")
        if name in out:
            raise typer.BadParameter(f"--signal {name} is given more than once")
        out[name.strip()] = int(threshold) if sep else None
    return out


@alerts_app.command("subscribe")
def alerts_subscribe(
    uscc: Annotated[str, typer.Argument(help="the enterprise's unified social credit code")],
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    identity: IdentityOption,
    consent: Annotated[str, typer.Option(help="its post_loan_monitoring consent id")],
    signal: Annotated[
        list[str],
        typer.Option(
            help="a signal type, optionally =THRESHOLD (repeatable): court_judgment, "
            "dishonest_debtor, administrative_penalty, abnormal_operation, tax_downgrade, "
            "tax_arrears, headcount_drop, utility_arrears, score_change (=points); "
            "`creditshare alerts signals` lists them with their bounds",
        ),
    ],
    chain: Annotated[
        list[ChainName] | None, typer.Option(help="limit to a chain (repeatable)")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="score_change: the model whose score is watched (default: queries')"),
    ] = None,
    alert_key_file: AlertKeyOption = None,
    key_file: KeyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Watch an enterprise for risk events (signed by the bank, naming its alert key;
    with score_change, its Paillier key too: only the bank reads the score)."""
    signals = _signals(signal)
    scored = "score_change" in signals
    with _client(coordinator, api_key, alert_key_file, identity, key_file, scored) as client:
        sub = client.subscribe(uscc, consent, signals, chain_values(chain), model)
    if as_json:
        print(json.dumps(sub, ensure_ascii=False, indent=2))
        return
    nodes = sub.get("nodes") or []
    registered = sum(1 for n in nodes if n.get("registered"))
    console.print(
        f"subscribed to {sub.get('uscc')} (ledger entry {sub.get('ledger_index')}); "
        f"{registered} of {len(nodes)} nodes in scope registered it"
    )
    print(sub["subscription_id"])


@alerts_app.command("signals")
def alerts_signals(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the signal types a subscription may choose (--signal), with their threshold
    bounds and the nodes that raise each."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        signals = client.signals()
    if as_json:
        print_json(signals)
        return

    def threshold(s: dict[str, Any]) -> str | None:
        t = s.get("threshold")
        return f"{t['minimum']}–{t['maximum']} (default {t['default']})" if t else None

    print_table(
        [
            ("signal", lambda s: s["type"]),
            ("severity", lambda s: s.get("severity")),
            ("threshold", threshold),
            ("chains", lambda s: ", ".join(s.get("chains") or [])),
            ("nodes", lambda s: len(s.get("nodes") or [])),
            ("description", lambda s: s.get("description")),
        ],
        signals,
        empty="no signal types",
    )


@alerts_app.command("subscriptions")
def alerts_subscriptions(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    status: Annotated[Literal["active", "ended"] | None, typer.Option(help="only these")] = None,
    as_json: JsonOption = False,
) -> None:
    """List this bank's subscriptions."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        subs = client.subscriptions(status)
    if as_json:
        print(json.dumps(subs, ensure_ascii=False, indent=2))
        return
    table = Table("subscription", "uscc", "signals", "status", "since")
    for s in subs:
        signals = ", ".join(
            x["type"] if x.get("threshold") is None else f"{x['type']}≥{x['threshold']}"
            for x in s.get("signals", [])
        )
        state = s.get("status", "")
        if s.get("ended_reason"):
            state += f" ({s['ended_reason']})"
        table.add_row(s["subscription_id"], s.get("uscc", ""), signals, state, s.get("created_at"))
    console.print(table)


@alerts_app.command("unsubscribe")
def alerts_unsubscribe(
    subscription_id: Annotated[str, typer.Argument(help="the subscription's id")],
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
) -> None:
    """End a subscription (recorded in the ledger; nodes stop serving it)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        sub = client.unsubscribe(subscription_id)
    console.print(f"subscription {subscription_id} ended: {sub.get('ended_reason', 'ended')}")


def _since(value: str | None) -> tuple[str | None, datetime | None]:
    """(cursor, time): a cursor is digits, anything else must be an ISO time."""
    if value is None:
        return None, None
    if value.isdigit():
        return value, None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"--since {value!r} is neither a cursor (digits) nor an ISO time"
        ) from None
    if moment.tzinfo is None:
        raise typer.BadParameter(f"--since {value!r}: give the time zone (e.g. Z or +08:00)")
    return None, moment


def _stored_since(alert: Alert, moment: datetime | None) -> bool:
    if moment is None:
        return True
    try:
        return datetime.fromisoformat(alert.stored_at) >= moment
    except ValueError:
        return True  # cannot tell: show it rather than hide it


def _row(alert: Alert) -> tuple[str, ...]:
    change = f"{alert.before or '–'}→{alert.after or '–'}" if alert.indicator else ""
    return (
        alert.observed_at.isoformat(),
        alert.uscc,
        alert.signal.value,
        alert.severity.value,
        change,
        alert.node or "(all nodes)",  # score_change: the score sums every node's share
    )


def _print_gaps(inbox: AlertInbox, shown: set[object]) -> None:
    for gap in inbox.gaps:
        if gap not in shown:
            shown.add(gap)
            print(f"warning: {gap} (never delivered)", file=sys.stderr)


def _alerts(
    client: CreditShareClient, since: str | None, inbox_file: Path | None, follow: bool
) -> tuple[Iterable[Alert], AlertInbox, datetime | None]:
    from creditshare.client import AlertInbox

    cursor, moment = _since(since)
    inbox = AlertInbox(inbox_file)
    return client.alerts(after=cursor, follow=follow, inbox=inbox), inbox, moment


@alerts_app.command("list")
def alerts_list(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    since: SinceOption = None,
    inbox: InboxOption = None,
    alert_key_file: AlertKeyOption = None,
    key_file: KeyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the alerts stored for this bank, opened with its alert key (score_change scores with
    its Paillier key), each event once."""
    with _client(coordinator, api_key, alert_key_file, key_file=key_file) as client:
        alerts, box, moment = _alerts(client, since, inbox, follow=False)
        shown = [a for a in alerts if _stored_since(a, moment)]
    if as_json:
        doc: dict[str, Any] = {
            "alerts": [a.to_json() for a in shown],
            "cursor": box.cursor,
            "gaps": [str(g) for g in box.gaps],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    if shown:
        table = Table("time", "uscc", "type", "severity", "before→after", "node")
        for alert in shown:
            table.add_row(*_row(alert))
        console.print(table)
    console.print(f"{len(shown) or 'no new'} alert(s); resume with --since {box.cursor or 0}")
    _print_gaps(box, set())


@alerts_app.command("watch")
def alerts_watch(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    since: SinceOption = None,
    inbox: InboxOption = None,
    alert_key_file: AlertKeyOption = None,
    key_file: KeyFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object a line")] = False,
) -> None:
    """Print alerts as they arrive (server-sent events; reconnects by itself). Ctrl-C ends."""
    with _client(coordinator, api_key, alert_key_file, key_file=key_file) as client:
        alerts, box, moment = _alerts(client, since, inbox, follow=True)
        gaps: set[object] = set()
        try:
            for alert in alerts:
                if _stored_since(alert, moment):
                    if as_json:
                        print(json.dumps(alert.to_json(), ensure_ascii=False), flush=True)
                    else:
                        console.print("  ".join(_row(alert)))
                box.accept(alert)  # shown: not again after a restart
                _print_gaps(box, gaps)
        except KeyboardInterrupt:
            pass
        finally:
            box.save()


@webhook_app.command("set")
def webhook_set(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives alert batches")],
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
) -> None:
    """Deliver alerts to URL too; prints the signing secret (shown only this once)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        hook = client.set_webhook(url)
    console.print(
        f"alerts go to {hook['url']}; check each call with verify_webhook(secret, headers, "
        "body). The secret (keep it, it is not shown again):"
    )
    print(hook["secret"])


@webhook_app.command("show")
def webhook_show(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    deliveries: Annotated[bool, typer.Option(help="also list the deliveries")] = False,
    as_json: JsonOption = False,
) -> None:
    """The webhook URL (never the secret), and with --deliveries the list of deliveries
    and their state."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        hook = client.webhook()
        sent = client.webhook_deliveries() if deliveries else None
    if as_json:
        print_json(hook if sent is None else {**hook, "deliveries": sent})
        return
    console.print(f"{hook['url']} (since {hook.get('created_at')})", markup=False)
    if sent is not None:
        print_table(
            [
                ("delivery", lambda d: d.get("webhook_id", d.get("id"))),
                ("status", lambda d: d.get("status")),
                ("attempts", lambda d: d.get("attempts")),
                ("last error", lambda d: d.get("last_error")),
            ],
            sent,
            empty="no deliveries",
        )


@webhook_app.command("remove")
def webhook_remove(coordinator: CoordinatorOption, api_key: ApiKeyOption) -> None:
    """Stop webhook deliveries (alerts stay readable with `alerts list`)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        client.remove_webhook()
    console.print("webhook removed")


@monitoring_app.command("cycle")
def monitoring_cycle(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    as_json: JsonOption = False,
) -> None:
    """Run one monitoring cycle now (operators): each node answers each subscription it
    serves."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        cycle = client.run_monitoring_cycle()
    if as_json:
        print(json.dumps(cycle, ensure_ascii=False, indent=2))
        return
    console.print(
        f"cycle {cycle['number']} (ledger entry {cycle.get('ledger_index')}): "
        f"{cycle.get('subscriptions')} subscription(s)"
    )
    for node in cycle.get("nodes", []):
        state = (
            f"[red]{node['error']}[/]"
            if node.get("error")
            else (
                f"{_count(node.get('batches'))} batches, {_count(node.get('unknown'))} unknown, "
                f"{_count(node.get('ended'))} ended"
            )
        )
        console.print(f"  {node['node']}: {state}")


def _count(value: Any) -> int:
    """A count the summary gives as a number or as the list of what it counts."""
    return len(value) if isinstance(value, list) else int(value or 0)


@monitoring_app.command("cycles")
def monitoring_cycles(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many cycles, newest first")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the latest monitoring cycles (operators), newest first."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        cycles = client.monitoring_cycles(limit)
    if as_json:
        print_json(cycles)
        return

    def failed(cycle: dict[str, Any]) -> str:
        return ", ".join(n["node"] for n in cycle.get("nodes", []) if n.get("error"))

    print_table(
        [
            ("cycle", lambda c: c["number"]),
            ("ledger entry", lambda c: c.get("ledger_index")),
            ("started", lambda c: when(c.get("started_at"))),
            ("finished", lambda c: when(c.get("finished_at"))),
            ("subscriptions", lambda c: c.get("subscriptions")),
            ("nodes", lambda c: len(c.get("nodes", []))),
            ("batches", lambda c: sum(_count(n.get("batches")) for n in c.get("nodes", []))),
            ("failed nodes", failed),
        ],
        cycles,
        empty="no monitoring cycles yet",
    )
