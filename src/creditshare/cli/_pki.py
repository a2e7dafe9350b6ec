"""``creditshare pki ...``: chain CAs, certificate requests, certificates and revocation.

The flow keeps every private key where it is used: each party runs ``pki request``
on its own machine and sends only the ``.csr``; the chain operator runs ``pki sign``
at the CA (off the coordinator host) and sends back the ``.crt``; ``pki revoke`` and
``pki crl`` publish revocations as a signed, dated list. No command here makes a
key for anyone but the party running it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from creditshare.cli._common import ParticipantIdOption, console

__all__ = ["pki_app"]

pki_app = typer.Typer(
    no_args_is_help=True,
    help="Chain CAs, certificate requests, TLS certificates, participant credentials, CRLs.",
)

CaDirOption = Annotated[Path, typer.Option("--ca-dir", help="the chain CA's folder")]


@pki_app.command("init")
def pki_init(
    chain: Annotated[str, typer.Option(help="yrd, prd or bth")],
    out: Annotated[Path, typer.Option(help="folder for ca.crt and ca.key")],
) -> None:
    """Create a chain's certificate authority."""
    from creditshare.pki import init_ca

    files = init_ca(chain, out)
    console.print(f"CA for chain {chain}: {files.cert} (key {files.key}, mode 0600)")


@pki_app.command("request")
def pki_request(
    participant_id: ParticipantIdOption,
    role: Annotated[
        str,
        typer.Option(
            help="bank, bureau, enterprise, operator, regulator, department, node or coordinator"
        ),
    ],
    out: Annotated[Path, typer.Option(help="this party's key folder (keys are written 0600)")],
    uscc: Annotated[
        str | None, typer.Option(help="the enterprise's USCC (enterprises only)")
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="DNS name or IP the TLS certificate names (node/coordinator; repeatable)"
        ),
    ] = None,
) -> None:
    """Make this party's own key pair(s) and the request(s) to send to the chain CA.

    Run it on the machine that will use the keys; send only the .csr files.
    """
    from creditshare.crypto import SigningKey
    from creditshare.pki import request

    files = request(out, participant_id, role, uscc=uscc, hosts=host or ())
    for key in (files.signing_key, files.tls_key):
        if key is not None:
            console.print(f"private key {key} (mode 0600; never leaves this machine)")
    for csr in files.csrs:
        console.print(f"send to the chain CA: {csr}")
    if files.signing_key is not None:
        public = SigningKey.from_pem(files.signing_key.read_bytes()).verify_key.to_text()
        console.print(
            "signing public key (an enterprise's operator registers it with "
            "`admin add-participant --signing-key`):"
        )
        print(public)


@pki_app.command("sign")
def pki_sign(
    ca: CaDirOption,
    csr: Annotated[Path, typer.Option(help="the .csr a party sent")],
    out: Annotated[Path, typer.Option(help="where to write the certificate (.crt)")],
    valid_days: Annotated[int, typer.Option(help="validity in days (at most 825)")] = 365,
) -> None:
    """Certify a party's request: Ed25519 -> participant credential, ECDSA P-256 -> TLS."""
    from creditshare.pki import sign
    from creditshare.pki._files import read_file

    signed = sign(ca, read_file(csr, "certificate signing request"), out, valid_days=valid_days)
    what = "credential" if signed.kind == "credential" else "TLS certificate"
    console.print(f"{what} for {signed.participant_id!r}, role {signed.role}")
    if signed.uscc is not None:
        console.print(f"  USCC       {signed.uscc}")
    if signed.hosts:
        console.print(f"  hosts      {', '.join(signed.hosts)}")
    console.print(f"  serial     {signed.serial:x}")
    console.print(f"  valid      {signed.not_before.isoformat()} to {signed.not_after.isoformat()}")
    console.print(f"  written    {signed.cert} (with the CA certificate {signed.ca})")


@pki_app.command("revoke")
def pki_revoke(
    ca: CaDirOption,
    serial: Annotated[
        str | None, typer.Option(help="serial in hex, as `pki sign` printed it")
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="the certificate file to revoke")] = None,
    reason: Annotated[
        str, typer.Option(help="key_compromise, superseded, cessation_of_operation, ...")
    ] = "unspecified",
) -> None:
    """Revoke a certificate this CA issued; nodes learn it from the next `pki crl`."""
    from creditshare.errors import InvalidInputError
    from creditshare.pki import revoke

    number: int | None = None
    if serial is not None:
        try:
            number = int(serial.removeprefix("0x"), 16)
        except ValueError:
            raise InvalidInputError(f"serial {serial!r} is not a hex number") from None
    entry = revoke(ca, serial=number, cert=cert, reason=reason)
    console.print(
        f"serial {entry.serial:x} revoked at {entry.revoked_at.isoformat()} ({entry.reason}); "
        "publish it with `creditshare pki crl`"
    )


@pki_app.command("crl")
def pki_crl(
    ca: CaDirOption,
    out: Annotated[Path, typer.Option(help="where to write the revocation list")],
    valid_hours: Annotated[int, typer.Option(help="hours until the next list is due")] = 24,
) -> None:
    """Publish the CA's signed, numbered, dated revocation list (run it daily)."""
    from creditshare.pki import issue_revocation_list

    crl = issue_revocation_list(ca, out, valid_hours=valid_hours)
    console.print(
        f"revocation list {crl.number}: {len(crl.revoked_serials)} revoked, "
        f"valid {crl.this_update.isoformat()} to {crl.next_update.isoformat()}, in {out}"
    )
