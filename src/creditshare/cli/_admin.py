"""``creditshare admin ...``: chain operator tasks (participants and their API keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from creditshare._settings import load_settings
from creditshare.cli._common import (
    ApiKeyOption,
    ConfigOption,
    CoordinatorOption,
    JsonOption,
    ParticipantIdOption,
    RoleName,
    console,
    print_json,
    print_table,
    when,
)

__all__ = ["admin_app"]

admin_app = typer.Typer(no_args_is_help=True, help="Chain operator tasks.")


@admin_app.command("bootstrap")
def admin_bootstrap(
    config: ConfigOption,
    participant_id: Annotated[str, typer.Option("--id")] = "operator",
    name: Annotated[str, typer.Option()] = "Chain operator",
) -> None:
    """Create the first operator and print its API key (directly in the database)."""
    from creditshare.coordinator import CoordinatorSettings
    from creditshare.coordinator._admin import bootstrap_operator

    issued = bootstrap_operator(load_settings(CoordinatorSettings, config), participant_id, name)
    console.print(f"operator {issued.participant_id}; API key (shown once):")
    print(issued.api_key)


@admin_app.command("add-participant")
def admin_add_participant(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    participant_id: Annotated[str, typer.Option("--id")],
    role: Annotated[RoleName, typer.Option(help="the participant's role")],
    name: Annotated[str, typer.Option()],
    uscc: Annotated[str | None, typer.Option(help="enterprises only")] = None,
    signing_key: Annotated[
        str | None, typer.Option(help="enterprises only: Ed25519 public key, base64")
    ] = None,
) -> None:
    """Register a participant (operator's API key) and print its first API key."""
    from creditshare.client import CreditShareClient
    from creditshare.crypto import VerifyKey

    verify = VerifyKey.from_text(signing_key) if signing_key else None
    with CreditShareClient(coordinator, api_key=api_key) as client:
        issued = client.register_participant(
            participant_id, role, name, uscc=uscc, signing_key=verify
        )
    console.print(f"registered {participant_id} ({role}); API key (shown once):")
    print(issued["api_key"])


@admin_app.command("list")
def admin_list(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    role: Annotated[RoleName | None, typer.Option(help="only participants of this role")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the participants (operator's API key), by id; disabled ones included."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        rows = client.participants(role)
    if as_json:
        print_json(rows)
        return
    print_table(
        [
            ("id", lambda p: p["id"]),
            ("role", lambda p: p.get("role")),
            ("name", lambda p: p.get("name")),
            ("uscc", lambda p: p.get("uscc")),
            ("disabled", lambda p: bool(p.get("disabled"))),
            ("created", lambda p: when(p.get("created_at"))),
        ],
        rows,
        empty="no participants" + (f" of role {role}" if role else ""),
    )


def _participant_line(row: dict[str, Any]) -> str:
    state = "disabled: its API keys are refused" if row["disabled"] else "enabled"
    return f"{row['id']} ({row['role']}): {state}"


@admin_app.command("disable")
def admin_disable(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, participant_id: ParticipantIdOption
) -> None:
    """Suspend a participant: all its API keys stop; an enterprise's consents are revoked."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        console.print(_participant_line(client.disable_participant(participant_id)))


@admin_app.command("enable")
def admin_enable(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, participant_id: ParticipantIdOption
) -> None:
    """Lift a suspension: its unrevoked API keys work again (consents stay revoked)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        console.print(_participant_line(client.enable_participant(participant_id)))


@admin_app.command("issue-key")
def admin_issue_key(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, participant_id: ParticipantIdOption
) -> None:
    """Issue a participant a further API key and print it (shown once)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        issued = client.issue_credential(participant_id)
    console.print(f"new API key for {participant_id} (shown once):")
    print(issued["api_key"])


@admin_app.command("revoke-key")
def admin_revoke_key(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    participant_id: ParticipantIdOption,
    key_id: Annotated[str, typer.Option(help="the 16 hex digits after cs_ in the key")],
) -> None:
    """Revoke one API key; the participant's other keys keep working."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        client.revoke_credential(participant_id, key_id)
    console.print(f"key {key_id} of {participant_id} revoked")


@admin_app.command("upload-crl")
def admin_upload_crl(
    coordinator: CoordinatorOption,
    api_key: Annotated[
        str,
        typer.Option("--api-key", envvar="CREDITSHARE_API_KEY", help="an operator's API key"),
    ],
    crl: Annotated[Path, typer.Option(help="the revocation list `creditshare pki crl` wrote")],
) -> None:
    """Relay a chain CA's newest revocation list to the data nodes (do it daily: nodes
    refuse every request once the list they hold is older than their bound)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        out = client.upload_revocation_list(crl.read_bytes())
    console.print(
        f"revocation list number {out['number']} relayed (issued {out['this_update']}, "
        f"next by {out['next_update']})"
    )


@admin_app.command("revocation-lists")
def admin_revocation_lists(
    coordinator: CoordinatorOption, api_key: ApiKeyOption, as_json: JsonOption = False
) -> None:
    """List the revocation lists the coordinator relays (one per chain CA): a list past
    its next update makes nodes refuse every request, so upload a new one before."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        lists = client.revocation_lists()
    if as_json:
        print_json(lists)
        return
    print_table(
        [
            ("issuer", lambda r: r["issuer"]),
            ("number", lambda r: r.get("number")),
            ("issued", lambda r: when(r.get("this_update"))),
            ("next update by", lambda r: when(r.get("next_update"))),
        ],
        lists,
        empty="no revocation lists uploaded (`creditshare admin upload-crl`)",
    )
