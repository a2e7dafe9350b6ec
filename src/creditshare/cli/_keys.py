"""``creditshare keys ...``: a bank's or bureau's Paillier keys registered at the coordinator."""

from __future__ import annotations

from typing import Annotated

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    JsonOption,
    KeyFileOption,
    console,
    paillier_key,
    print_json,
    print_table,
    when,
)

__all__ = ["keys_app"]

keys_app = typer.Typer(
    no_args_is_help=True, help="A bank's or bureau's Paillier keys registered at the coordinator."
)


@keys_app.command("register")
def keys_register(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    key_file: KeyFileOption = None,
) -> None:
    """Register the local key's public half (checked once there); prints its fingerprint."""
    from creditshare.client import CreditShareClient

    key = paillier_key(key_file)
    with CreditShareClient(coordinator, api_key=api_key, private_key=key) as client:
        registered = client.register_paillier_key()
    console.print(f"registered {registered['bits']}-bit Paillier key:")
    print(registered["fingerprint"])


@keys_app.command("list")
def keys_list(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    as_json: JsonOption = False,
) -> None:
    """List every key registered to this participant, retired ones included."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        keys = client.paillier_keys()
    if as_json:
        print_json(keys)
        return
    print_table(
        [
            ("fingerprint", lambda k: k["fingerprint"]),
            ("bits", lambda k: k.get("bits")),
            ("state", lambda k: "active" if k.get("active") else "retired"),
            ("registered", lambda k: when(k.get("created_at"))),
            ("retired", lambda k: when(k.get("retired_at"))),
        ],
        keys,
        empty="no Paillier keys registered",
    )


@keys_app.command("retire")
def keys_retire(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    fingerprint: Annotated[str, typer.Option(help="the key's fingerprint (keys list)")],
) -> None:
    """No new query or training job may use the key (rotate: register the new one first)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        client.retire_paillier_key(fingerprint)
    console.print(f"Paillier key {fingerprint} retired")
