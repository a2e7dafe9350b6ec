"""Top-level listings of what the coordinator knows: ``creditshare models | nodes |
indicators | consents | credentials``. Each prints a table, or with ``--json`` the route's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    CoordinatorOption,
    JsonOption,
    print_json,
    print_table,
    when,
)

__all__ = [
    "BeforeOption",
    "LimitOption",
    "consents_command",
    "credentials_command",
    "indicators_command",
    "models_command",
    "nodes_command",
    "print_consents",
]

LimitOption = Annotated[
    int, typer.Option(min=1, max=1000, help="the most items to list, newest first (at most 1000)")
]
BeforeOption = Annotated[
    str | None,
    typer.Option(help="list those after this id (the last one of the previous listing)"),
]


def _metric(name: str) -> Any:
    def value(model: Mapping[str, Any]) -> object:
        number = (model.get("metrics") or {}).get(name)
        return f"{number:.4f}" if isinstance(number, int | float) else None

    return value


def models_command(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the scoring models queries may name: published scorecards and models
    bureaus trained, with their held-out metrics."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        models = client.models()
    if as_json:
        print_json(models)
        return
    print_table(
        [
            ("id", lambda m: m["id"]),
            ("type", lambda m: m.get("model_type")),
            ("origin", lambda m: m.get("origin")),
            ("trained by", lambda m: m.get("trained_by")),
            ("test AUC", _metric("test_auc")),
            ("test KS", _metric("test_ks")),
            ("created", lambda m: when(m.get("created_at"))),
            ("description", lambda m: m.get("description")),
        ],
        models,
        empty="no models",
    )


def _reachable(node: Mapping[str, Any]) -> object:
    if "reachable" not in node:
        return None
    state = node["reachable"]
    return "not probed yet" if state is None else state


def nodes_command(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the data nodes the coordinator queries (and, where it reports them, whether
    each answers, when it last did, how fast, and its version)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        nodes = client.nodes()
    if as_json:
        print_json(nodes)
        return
    columns: list[tuple[str, Any]] = [
        ("id", lambda n: n["id"]),
        ("chain", lambda n: n.get("chain")),
        ("department", lambda n: n.get("department")),
        ("address", lambda n: n.get("address")),
    ]
    # Reachability columns only where the coordinator reports them (newer versions).
    optional: list[tuple[str, str, Any]] = [
        ("reachable", "reachable", _reachable),
        ("last_answer_at", "last answer", lambda n: when(n.get("last_answer_at"))),
        ("last_latency_ms", "latency ms", lambda n: n.get("last_latency_ms")),
        ("version", "version", lambda n: n.get("version")),
        ("last_error", "last error", lambda n: n.get("last_error")),
    ]
    columns += [(header, value) for key, header, value in optional if any(key in n for n in nodes)]
    print_table(columns, nodes, empty="no nodes")


def indicators_command(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the indicators the nodes publish: the names a consent's --indicator may give."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        indicators = client.indicators()
    if as_json:
        print_json(indicators)
        return
    print_table(
        [
            ("name", lambda i: i["name"]),
            ("departments", lambda i: ", ".join(i.get("departments") or [])),
            ("chains", lambda i: ", ".join(i.get("chains") or [])),
            ("bands", lambda i: " | ".join(i.get("bands") or [])),
            ("description", lambda i: i.get("description")),
        ],
        indicators,
        empty="no indicators published",
    )


def print_consents(consents: list[dict[str, Any]], as_json: bool) -> None:
    """Consents (``ConsentOut``) as a table, or as JSON."""
    if as_json:
        print_json(consents)
        return

    def uses(c: Mapping[str, Any]) -> str:
        limit = c.get("max_uses")
        return f"{c.get('uses', 0)}/{limit}" if limit is not None else str(c.get("uses", 0))

    def state(c: Mapping[str, Any]) -> str:
        return "revoked" if c.get("revoked") else "granted"

    print_table(
        [
            ("consent", lambda c: c["consent_id"]),
            ("uscc", lambda c: c.get("uscc")),
            ("grantee", lambda c: c.get("grantee")),
            ("purpose", lambda c: c.get("purpose")),
            ("valid until", lambda c: when((c.get("document") or {}).get("valid_until"))),
            ("uses", uses),
            ("state", state),
            ("granted", lambda c: when(c.get("created_at"))),
        ],
        consents,
        empty="no consents",
    )


def consents_command(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    uscc: Annotated[str | None, typer.Option(help="only those about this enterprise")] = None,
    limit: LimitOption = 100,
    before: BeforeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your consents, newest first: a bank's or bureau's those granted to it, an
    enterprise's those it granted, an operator's all."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        consents = client.held_consents(uscc=uscc, limit=limit, before=before)
    print_consents(consents, as_json)


def credentials_command(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the credentials (certificates the chain CAs issued for your signing key) the
    coordinator holds for you and relays to nodes with your requests."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        held = client.credentials()
    if as_json:
        print_json(held)
        return
    print_table(
        [
            ("fingerprint", lambda c: c["fingerprint"]),
            ("participant", lambda c: c.get("participant_id")),
            ("serial", lambda c: c.get("serial")),
            ("valid until", lambda c: when(c.get("not_after"))),
        ],
        held,
        empty="no credentials uploaded (they are, with your first signed request)",
    )
