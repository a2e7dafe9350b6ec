"""``creditshare enterprise ...``: an enterprise's consent-signing key, consents and queries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    ChainName,
    CoordinatorOption,
    JsonOption,
    ParticipantIdOption,
    PurposeName,
    console,
    print_json,
    print_table,
)
from creditshare.cli._lists import BeforeOption, LimitOption, print_consents

if TYPE_CHECKING:
    from creditshare.client import AccessEntry, WitnessPolicy

__all__ = ["enterprise_app"]

#: ``creditshare.client.DEFAULT_HEADS_FILE``, kept here so the CLI starts without the SDK.
DEFAULT_HEADS_FILE_OPTION = Path("~/.config/creditshare/heads.json")

enterprise_app = typer.Typer(no_args_is_help=True, help="An enterprise's keys and consents.")


@enterprise_app.command("keygen")
def enterprise_keygen(
    out: Annotated[Path, typer.Option(help="where to keep the Ed25519 signing key (0600)")],
) -> None:
    """Create the enterprise's consent-signing key; register the printed public key."""
    from creditshare.client import load_or_create_signing_key

    key = load_or_create_signing_key(out)
    console.print(f"signing key at {out}; public key to register:")
    print(key.verify_key.to_text())


@enterprise_app.command("grant")
def enterprise_grant(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    uscc: Annotated[str, typer.Option()],
    grantee: Annotated[str, typer.Option(help="bank or bureau participant id")],
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity",
            envvar="CREDITSHARE_IDENTITY",
            help="the enterprise's identity folder (signing.key and the credentials the "
            "chain CAs issued for it): signs the consent, and uploads the credentials "
            "if the coordinator has none yet",
        ),
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(help="or only the Ed25519 key file (credentials uploaded already)"),
    ] = None,
    purpose: Annotated[
        PurposeName, typer.Option(help="what the grantee may use it for")
    ] = "pre_loan_review",
    days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    max_uses: Annotated[int | None, typer.Option(min=1)] = None,
    chain: Annotated[
        list[ChainName] | None,
        typer.Option(help="a chain in scope (repeatable; default all)"),
    ] = None,
    indicator: Annotated[
        list[str] | None,
        typer.Option(
            help="an indicator in scope (repeatable; default all): the names "
            "`creditshare indicators` lists"
        ),
    ] = None,
) -> None:
    """Sign a consent for a grantee and submit it; prints the consent id."""
    from datetime import UTC, datetime, timedelta

    from creditshare.client import CreditShareClient, Identity, load_signing_key
    from creditshare.consent import ALL_INDICATORS, ConsentGrant
    from creditshare.identity import Chain

    if (identity is None) == (signing_key is None):
        raise typer.BadParameter("give exactly one of --identity and --signing-key")
    signer = Identity.load(identity) if identity is not None else None
    if signer is not None:
        key = signer.signing_key
    else:
        assert signing_key is not None  # exactly one of the two was given
        key = load_signing_key(signing_key)
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc,
        grantee,
        purpose,
        now,
        now + timedelta(days=days),
        chains=tuple(Chain(c.value) for c in chain) if chain else tuple(Chain),
        indicators=tuple(indicator) if indicator else (ALL_INDICATORS,),
        max_uses=max_uses,
    )
    with CreditShareClient(coordinator, api_key=api_key, identity=signer) as client:
        stored = client.grant_consent(grant.sign(key))
    print(stored["consent_id"])


@enterprise_app.command("revoke")
def enterprise_revoke(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    consent: Annotated[str, typer.Option(help="consent id")],
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="the enterprise's Ed25519 key file: sign the revocation, so every data node "
            "keeps it and refuses the consent itself"
        ),
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity",
            envvar="CREDITSHARE_IDENTITY",
            help="or the enterprise's identity folder (its signing.key signs the revocation)",
        ),
    ] = None,
) -> None:
    """Revoke a consent; it stops working at once."""
    from creditshare.client import CreditShareClient, Identity, load_signing_key

    key = load_signing_key(signing_key) if signing_key is not None else None
    if key is None and identity is not None:
        key = Identity.load(identity).signing_key
    with CreditShareClient(coordinator, api_key=api_key) as client:
        result = client.revoke_consent(consent, key)
    console.print(f"consent {consent} revoked")
    nodes = result.get("nodes") or []
    if nodes:
        held = [n["node"] for n in nodes if n["holds_revocation"]]
        console.print(
            f"held by {len(held)} of {len(nodes)} data nodes: {', '.join(held) or 'none yet'}"
        )
        for n in nodes:
            if not n["holds_revocation"]:
                console.print(f"  not yet at {n['node']} (handed again later): {n['reason']}")
    elif key is None:
        console.print("unsigned: only the coordinator enforces it (give --signing-key)")


@enterprise_app.command("consents")
def enterprise_consents(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    limit: LimitOption = 100,
    before: BeforeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the consents this enterprise granted (its API key), newest first, revoked
    ones included."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        consents = client.held_consents(limit=limit, before=before)
    print_consents(consents, as_json)


@enterprise_app.command("rotate-key")
def enterprise_rotate_key(
    coordinator: CoordinatorOption,
    api_key: ApiKeyOption,
    participant_id: ParticipantIdOption,
    signing_key: Annotated[
        Path | None, typer.Option(help="the new Ed25519 key file (created if absent)")
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="or only the new public key, base64 (an operator)")
    ] = None,
) -> None:
    """Replace the enterprise's consent-signing key (the enterprise itself or an operator);
    grants signed with the old key are refused from then on."""
    from creditshare.client import CreditShareClient, load_or_create_signing_key
    from creditshare.crypto import VerifyKey

    if (signing_key is None) == (public_key is None):
        raise typer.BadParameter("give exactly one of --signing-key and --public-key")
    if signing_key is not None:
        new = load_or_create_signing_key(signing_key).verify_key
    else:
        new = VerifyKey.from_text(public_key or "")
    with CreditShareClient(coordinator, api_key=api_key) as client:
        client.rotate_signing_key(participant_id, new)
    console.print(f"{participant_id} now signs consents with {new.to_text()}")


@enterprise_app.command("queries")
def enterprise_queries(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    uscc: Annotated[str, typer.Option()],
    log_key: Annotated[str, typer.Option(help="the ledger's Ed25519 public key (pinned)")],
    witness: Annotated[
        list[str] | None,
        typer.Option(
            envvar="CREDITSHARE_WITNESSES",
            help="a witness (data node) vkey '<name>+<key id>+<key>'; repeat for each "
            "(the variable: space-separated)",
        ),
    ] = None,
    witnesses_file: Annotated[
        Path | None,
        typer.Option(
            envvar="CREDITSHARE_WITNESSES_FILE", help="a file of witness vkeys, one a line"
        ),
    ] = None,
    quorum: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="CREDITSHARE_QUORUM",
            help="distinct witnesses that must have cosigned a head (default: all given)",
        ),
    ] = None,
    heads_file: Annotated[
        Path,
        typer.Option(
            envvar="CREDITSHARE_HEADS_FILE",
            help="where heads accepted earlier are remembered (to catch a split view)",
        ),
    ] = DEFAULT_HEADS_FILE_OPTION,
    as_json: JsonOption = False,
) -> None:
    """List every query about the enterprise, each checked for inclusion in the signed ledger
    and, with --witness/--witnesses-file, under a head a quorum of nodes cosigned."""
    from creditshare.client import CreditShareClient, WitnessPolicy
    from creditshare.crypto import VerifyKey

    vkeys = list(witness or [])
    policy = None
    if witnesses_file is not None:
        policy = WitnessPolicy.from_file(witnesses_file, 1, vkeys)
        vkeys = [w.vkey() for w in policy.witnesses]
    if vkeys:
        policy = WitnessPolicy.from_vkeys(vkeys, quorum or len(vkeys))
    elif quorum is not None:
        raise typer.BadParameter("--quorum needs --witness or --witnesses-file")
    pinned = VerifyKey.from_text(log_key)
    with CreditShareClient(coordinator, api_key=api_key, head_state=heads_file) as client:
        entries = client.verified_enterprise_queries(uscc, pinned, policy)
    if as_json:
        print_json(
            {
                "witnessed": policy is not None,
                "quorum": policy.quorum if policy is not None else None,
                "entries": [_entry_json(e) for e in entries],
            }
        )
    else:
        _print_entries(entries, policy)
    if not all(e.verified for e in entries):
        raise typer.Exit(code=1)


def _entry_json(e: AccessEntry) -> dict[str, object]:
    return {
        "index": e.index,
        "time": e.record.time.isoformat(),
        "kind": e.record.kind,
        "requester": e.record.requester,
        "purpose": e.record.purpose,
        "consent_id": e.record.consent_id,
        "reason": e.record.reason,
        "verified": e.verified,
        "problem": e.problem,
        "witnessed_by": list(e.witnessed_by),
    }


def _print_entries(entries: list[AccessEntry], policy: WitnessPolicy | None) -> None:
    if policy is None:
        console.print(
            "[yellow]heads are UNWITNESSED: no --witness given, so only the coordinator "
            "vouches for this log (it could show you a log the nodes never saw)[/yellow]"
        )
    else:
        console.print(
            f"heads witnessed: a quorum of {policy.quorum} of {len(policy.witnesses)} "
            "witnesses required"
        )

    def mark(e: AccessEntry) -> str:
        if not e.verified:
            return f"NOT VERIFIED: {e.problem}"
        if policy is not None:
            return f"verified, witnessed by {', '.join(e.witnessed_by)}"
        return "verified (unwitnessed)"

    print_table(
        [
            ("index", lambda e: e.index),
            ("time", lambda e: f"{e.record.time:%Y-%m-%d %H:%M:%S}"),
            ("kind", lambda e: e.record.kind),
            ("requester", lambda e: e.record.requester),
            ("purpose", lambda e: e.record.purpose),
            ("inclusion", mark),
        ],
        entries,
        empty="no queries about this enterprise",
    )
