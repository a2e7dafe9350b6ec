"""``creditshare chain init``: every file a new chain needs, without the demo.

It writes what the demo's federation writes (``FederationLayout.write``, the same code):
each chain's CA and revocation list, the coordinator's settings, ledger signing key and
TLS identity per chain, and per data node its settings, TLS identity, credential and
witness key, each party's private keys made in that party's own folder. What it adds:
fixed ports instead of free ones, a host, PostgreSQL if asked, and a README of the exact
commands that come next (start, bootstrap the operator, publish the revocation lists,
register a bank, import, query), since a newcomer should not have to guess them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from creditshare.cli._common import ChainName, console

if TYPE_CHECKING:
    from creditshare.demo import FederationLayout
    from creditshare.identity import Chain

__all__ = ["ChainPlan", "chain_app", "next_steps", "plan_chain"]

chain_app = typer.Typer(
    no_args_is_help=True, help="Stand up a chain: CAs, keys and settings files for every service."
)

#: What ``chain init`` writes under its folder (and ``--force`` replaces).
WRITTEN = ("pki", "coordinator", "nodes", "README.md")
#: Marks a folder ``chain init`` made, listing the files it wrote: ``--force`` needs it.
MARKER = ".creditshare-chain"
#: Where the database name goes in ``--database-url``.
NAME_FIELD = "{name}"


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """What to write, checked: chains with their departments, addresses, databases."""

    departments: dict[Chain, tuple[str, ...]]
    host: str
    port: int
    node_ports: dict[str, int]
    #: ``--database-url`` with ``{name}`` (None: a SQLite file in each service's folder).
    database_url: str | None

    def database_url_for(self, service: str) -> str:
        assert self.database_url is not None
        return self.database_url.replace(NAME_FIELD, database_name(service))

    def port_for(self, service: str) -> int:
        return self.port if service == "coordinator" else self.node_ports[service]


def database_name(service: str) -> str:
    """The database of a service: ``coordinator``, or ``node_<chain>_<department>``."""
    return service if service == "coordinator" else "node_" + service.replace("-", "_")


def _bad(message: str, option: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=option)


def plan_chain(
    chains: Sequence[str],
    departments: Sequence[str],
    host: str,
    port: int,
    node_port: int,
    database_url: str | None,
) -> ChainPlan:
    """Check the options and decide every node's id and port; nothing is written.

    A ``--department`` is ``NAME`` (every chain) or ``CHAIN:NAME`` (that chain only); a
    chain no ``--department`` names gets every built-in department."""
    from creditshare.departments import DEPARTMENTS
    from creditshare.identity import Chain

    known_chains = ", ".join(c.value for c in Chain)
    picked: list[Chain] = []
    for name in chains or [c.value for c in Chain]:
        try:
            chain = Chain(name.strip().lower())
        except ValueError:
            raise _bad(f"unknown chain {name!r} (chains: {known_chains})", "--chain") from None
        if chain not in picked:
            picked.append(chain)
    everywhere: list[str] = []
    own: dict[Chain, list[str]] = {chain: [] for chain in picked}
    for entry in departments:
        scope, _, name = entry.rpartition(":")
        name = name.strip().lower()
        if name not in DEPARTMENTS:
            raise _bad(
                f"unknown department {name!r} in {entry!r} (built-in: "
                f"{', '.join(DEPARTMENTS)}; a department of your own: add its node by hand "
                "with `schema_file`, see docs/department-schemas.md)",
                "--department",
            )
        if not scope:
            everywhere.append(name)
            continue
        try:
            chain = Chain(scope.strip().lower())
        except ValueError:
            raise _bad(
                f"unknown chain {scope!r} in {entry!r} (chains: {known_chains})", "--department"
            ) from None
        if chain not in own:
            raise _bad(
                f"{entry!r} names chain {chain.value}, which is not among --chain "
                f"({', '.join(c.value for c in picked)})",
                "--department",
            )
        own[chain].append(name)
    chosen: dict[Chain, tuple[str, ...]] = {}
    for chain in picked:
        names = [*everywhere, *own[chain]] or list(DEPARTMENTS)
        chosen[chain] = tuple(dict.fromkeys(names))
    host = host.strip()
    if not host or _unspecified(host) or ":" in host or "/" in host:
        raise _bad(
            f"{host!r} is not an address to reach the services at: give a host name or an "
            "IPv4 address (every service listens on it and its certificate names it)",
            "--host",
        )
    node_ids = [f"{chain.value}-{name}" for chain, names in chosen.items() for name in names]
    node_ports = {node_id: node_port + i for i, node_id in enumerate(node_ids)}
    if max(node_ports.values()) > 65535:
        raise _bad(
            f"{len(node_ids)} nodes from port {node_port} go past 65535: give a lower one",
            "--node-port",
        )
    if port in node_ports.values():
        raise _bad(
            f"port {port} is also a node's ({node_port} to {max(node_ports.values())}: "
            "one port per node from --node-port)",
            "--port",
        )
    if database_url is not None:
        _check_database_url(database_url)
    return ChainPlan(chosen, host, port, node_ports, database_url)


def _unspecified(host: str) -> bool:
    """0.0.0.0 and the like: an address to listen on, not one to dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_database_url(template: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if NAME_FIELD not in template:
        raise _bad(
            f"each service needs a database of its own: write {NAME_FIELD} where the "
            "database name goes, e.g. postgresql+psycopg://creditshare@db.example:5432/"
            f"{NAME_FIELD}",
            "--database-url",
        )
    try:
        url = make_url(template.replace(NAME_FIELD, "coordinator"))
    except ArgumentError:
        raise _bad(f"{template!r} is not a database URL", "--database-url") from None
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise _bad(
            f"{url.get_backend_name()} is not supported (PostgreSQL or SQLite)", "--database-url"
        )
    if url.password is not None:
        raise _bad(
            "the URL carries a password, which every service's settings file would hold: "
            "leave it out (postgresql+psycopg://USER@HOST:PORT/{name}) and give each service "
            "its password in a PGPASSFILE (~/.pgpass) or its full URL in "
            "CREDITSHARE_COORDINATOR_DATABASE_URL / CREDITSHARE_NODE_DATABASE_URL",
            "--database-url",
        )


def _clear(out: Path, force: bool, discard_databases: bool) -> None:
    """Make ``out`` ready: new or empty; with ``force``, what an earlier run wrote is removed.

    ``--force`` removes only files an earlier ``chain init`` wrote (its marker lists them),
    since ``--out`` may name a folder of anything (``~``, a service's live folder). The
    databases the services made beside their settings, and any on a server the settings
    name, hold the ledger and the imported records: replacing the keys they were made with
    needs ``--discard-databases`` too. What is removed is listed first."""
    from creditshare.demo._run import remove_parts

    if out.exists() and not out.is_dir():
        raise _bad(f"{out} is a file, not a folder", "--out")
    present = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if not present:
        return
    held = f"{', '.join(present[:5])}{', ...' if len(present) > 5 else ''}"
    if not force:
        raise _bad(
            f"{out} is not empty ({held}): give a new or empty folder, or --force to replace "
            f"what an earlier `chain init` wrote in it ({', '.join(WRITTEN)})",
            "--out",
        )
    marker = out / MARKER
    if not marker.is_file():
        raise _bad(
            f"{out} holds {held} and no `creditshare chain init` made it (it has no {MARKER}): "
            "--force replaces only a folder chain init made, never files it did not write; "
            "give a new or empty folder",
            "--out",
        )
    written = {
        line.strip()
        for line in marker.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    found = _files_under(out)
    databases = [f for f in found if f not in written and _is_database(f)]
    foreign = [f for f in found if f not in written and not _is_database(f)]
    if foreign:
        raise _bad(
            f"{out} holds files an earlier `chain init` did not write ({_listed(foreign)}): "
            "--force would delete them with the folders they are in; move them out first",
            "--out",
        )
    servers = _server_databases(out)
    if (databases or servers) and not discard_databases:
        where = [*databases, *(f"{url} (on its server)" for url in servers)]
        raise _bad(
            f"{out} belongs to a chain whose services have databases ({_listed(where)}): "
            "they hold its ledger and imported records, which the new keys (the ledger "
            "signing key included) would orphan; back them up, and give --discard-databases "
            "as well to replace the chain anyway (files are deleted; a server's databases "
            "are not dropped: drop them yourself before the new chain starts)",
            "--discard-databases",
        )
    removed = sorted(f for f in found if f in written or _is_database(f))
    console.print(
        f"replacing the chain in {out}: removing\n" + "\n".join(f"  {f}" for f in removed),
        markup=False,
        soft_wrap=True,
    )
    remove_parts(out, (*WRITTEN, MARKER))


def _files_under(out: Path) -> list[str]:
    """Every file and link under the parts ``chain init`` writes, relative to ``out``."""
    found: list[str] = []
    for part in WRITTEN:
        path = out / part
        if path.is_symlink() or path.is_file():
            found.append(part)
        elif path.is_dir():
            for folder, dirs, files in os.walk(path):
                links = [d for d in dirs if (Path(folder) / d).is_symlink()]
                found += [str((Path(folder) / n).relative_to(out)) for n in [*files, *links]]
    return sorted(found)


def _is_database(name: str) -> bool:
    """A SQLite database a service made, or its journal (``*.db``, ``*.db-wal``, ...)."""
    return name.endswith(".db") or ".db-" in Path(name).name


def _server_databases(out: Path) -> list[str]:
    """The databases on a server (PostgreSQL) that the written settings name, shown
    without a password."""
    import tomllib

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    urls: list[str] = []
    for config in [out / "coordinator" / "coordinator.toml", *out.glob("nodes/*/node.toml")]:
        try:
            url = tomllib.loads(config.read_text(encoding="utf-8")).get("database_url")
            if isinstance(url, str) and not url.startswith("sqlite"):
                urls.append(make_url(url).render_as_string(hide_password=True))
        except (OSError, ValueError, ArgumentError):
            continue
    return urls


def _listed(items: Sequence[str], most: int = 8) -> str:
    more = len(items) - most
    return ", ".join(items[:most]) + (f" and {more} more" if more > 0 else "")


def _mark(out: Path) -> None:
    """Leave the marker that lets a later ``--force`` replace exactly these files."""
    lines = [
        "# Made by `creditshare chain init`: the files it wrote here. A later",
        "# `chain init --force` with this folder removes these (and nothing it did not write).",
        *_files_under(out),
    ]
    (out / MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")


@chain_app.command("init")
def chain_init(
    out: Annotated[Path, typer.Option(help="folder to write: new or empty")],
    chain: Annotated[
        list[ChainName] | None,
        typer.Option(help="a chain (repeatable; default all three)"),
    ] = None,
    department: Annotated[
        list[str] | None,
        typer.Option(
            help="a department node: NAME on every chain, or CHAIN:NAME on one (repeatable; "
            "built-in: tax, market, social, court, utility; default: every built-in one "
            "on each chain no --department names)"
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="where every service listens and is reached (in certificates)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="the coordinator's port")] = 8000,
    node_port: Annotated[
        int, typer.Option(min=1, max=65535, help="the first node's port; each next node +1")
    ] = 50051,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL instead of SQLite files: a URL with {name} where the database "
            "name goes (coordinator, node_yrd_tax, ...), e.g. "
            "postgresql+psycopg://creditshare@db.example:5432/{name}"
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="replace what an earlier `chain init` wrote in a non-empty --out"
        ),
    ] = False,
    discard_databases: Annotated[
        bool,
        typer.Option(
            "--discard-databases",
            help="with --force: replace the chain even though its services made databases "
            "(its ledger and records; SQLite files are deleted)",
        ),
    ] = False,
) -> None:
    """Write every CA, key and settings file of a chain, and the commands to run next.

    Private keys are written 0600, each in the folder of the party that uses it; the
    commands are printed and kept in OUT/README.md.
    """
    from creditshare.demo import FederationLayout

    plan = plan_chain(chain or [], department or [], host, port, node_port, database_url)
    shown = out
    out = out.expanduser().resolve()
    _clear(out, force, discard_databases)
    layout = FederationLayout.write(
        out,
        out,
        chains=plan.departments,
        departments=plan.departments,
        host=plan.host,
        port_for=plan.port_for,
        database_url_for=plan.database_url_for if plan.database_url else None,
    )
    text = next_steps(layout, plan, shown)
    (out / "README.md").write_text(text, encoding="utf-8")
    _mark(out)
    console.print(
        f"chain files for {len(layout.nodes)} data nodes and the coordinator written to {out}",
        markup=False,
        soft_wrap=True,
    )
    print(text)


def _rel(path: Path, layout: FederationLayout, shown: Path) -> str:
    """``path`` as the user will type it: under the folder as they named it."""
    return str(shown / path.relative_to(layout.work_dir))


def next_steps(layout: FederationLayout, plan: ChainPlan, shown: Path) -> str:
    """OUT/README.md: which folder goes where, and the exact commands, in order."""
    url = layout.coordinator_url
    assert layout.coordinator_config is not None
    coordinator = _rel(layout.coordinator_config, layout, shown)
    chains = list(plan.departments)
    first = layout.nodes[0]
    lines = [
        "# This chain's files",
        "",
        "Made by `creditshare chain init`. Walkthrough: docs/walkthrough.md in the "
        "creditshare repository.",
        "",
        "| folder | what | belongs to |",
        "|---|---|---|",
    ]
    for chain in chains:
        lines += [
            f"| `pki/{chain.value}/ca/` | the {chain.value} chain CA (its key signs every "
            "certificate: keep it offline) | the chain operator |",
            f"| `pki/{chain.value}/revocations.crl` | its first revocation list | "
            "the chain operator |",
            f"| `pki/{chain.value}/coordinator/` | the coordinator's TLS key and "
            f"certificate for {chain.value} | the coordinator's host |",
        ]
    lines += [
        "| `coordinator/` | `coordinator.toml`, the ledger signing key | the coordinator's host |",
        "| `nodes/<id>/` | `node.toml`, TLS key and certificate, credential, witness key | "
        "that node's host |",
        "",
        "Every private key and settings file is mode 0600. The settings files name absolute "
        "paths: a folder moved to another host needs its paths edited.",
        "",
    ]
    if plan.database_url is not None:
        names = ["coordinator", *(n.node_id for n in layout.nodes)]
        lines += [
            "## 0. Create the databases (PostgreSQL)",
            "",
            "One database per service, empty; each service makes its tables on start. The "
            "settings files hold no password: give each service's host its password in a "
            "PGPASSFILE (`~/.pgpass`, mode 0600), or its whole URL in "
            "CREDITSHARE_COORDINATOR_DATABASE_URL / CREDITSHARE_NODE_DATABASE_URL.",
            "",
            "```sh",
            *(f"createdb {database_name(name)}" for name in names),
            "```",
            "",
        ]
    lines += [
        "## 1. Import each department's records",
        "",
        "A CSV export of the department's complete records (columns: `creditshare node "
        "schema show DEPARTMENT`); to try the chain, `creditshare synth --out data` writes "
        "synthetic ones (data/<chain>/<department>.csv):",
        "",
        "```sh",
        *(
            f"creditshare node import --config {_rel(n.config, layout, shown)} "
            f"data/{n.chain.value}/{n.department}.csv"
            for n in layout.nodes
        ),
        "```",
        "",
        "## 2. Start the data nodes, then the coordinator (each in its own terminal)",
        "",
        "```sh",
        *(f"creditshare node serve --config {_rel(n.config, layout, shown)}" for n in layout.nodes),
        f"creditshare coordinator serve --config {coordinator}",
        "```",
        "",
        f"The coordinator answers on {url} (`curl {url}/healthz`).",
        "",
        "## 3. Bootstrap the chain operator and publish the revocation lists",
        "",
        "The first command keeps the operator's API key (printed once) in OPERATOR_KEY. "
        "Nodes refuse every request until they hold a fresh revocation list; publish one "
        "daily (`creditshare pki crl`, then `admin upload-crl`). API keys go in "
        "CREDITSHARE_API_KEY, not `--api-key`: every local user sees a command line (`ps`).",
        "",
        "```sh",
        f"OPERATOR_KEY=$(creditshare admin bootstrap --config {coordinator} | tail -n 1)",
        *(
            f'CREDITSHARE_API_KEY="$OPERATOR_KEY" creditshare admin upload-crl '
            f"--coordinator {url} --crl {_rel(layout.revocation_list(chain), layout, shown)}"
            for chain in chains
        ),
        "```",
        "",
        "## 4. Register a bank",
        "",
        "The bank makes its own signing key; each chain's CA certifies it; the operator "
        "registers the bank and gets its API key:",
        "",
        "```sh",
        "creditshare pki request --id my-bank --role bank --out bank/identity",
        *(
            f"creditshare pki sign --ca-dir {_rel(layout.work_dir / 'pki' / chain, layout, shown)}"
            f"/ca --csr bank/identity/signing.csr --out bank/identity/{chain.value}.crt"
            for chain in chains
        ),
        'BANK_KEY=$(CREDITSHARE_API_KEY="$OPERATOR_KEY" creditshare admin add-participant '
        f'--coordinator {url} --id my-bank --role bank --name "My Rural Bank" | tail -n 1)',
        "creditshare keygen --key-file bank/paillier-key.json",
        "```",
        "",
        "## 5. Query",
        "",
        "An enterprise registers the same way (`pki request --role enterprise --uscc USCC` "
        "prints the public key for `admin add-participant --signing-key`) and signs a "
        "consent for the bank (`creditshare enterprise grant`, which prints its id); the "
        "bank then asks (docs/walkthrough.md shows each command):",
        "",
        "```sh",
        f'CREDITSHARE_API_KEY="$BANK_KEY" creditshare query --coordinator {url} '
        "--identity bank/identity --key-file bank/paillier-key.json "
        "--uscc USCC --consent CONSENT_ID",
        "```",
        "",
        "## 6. A regulator's statistics",
        "",
        "A regulator (role `regulator`) registers like the bank and asks for noisy, "
        "encrypted cohort figures that its own Paillier key decrypts; each query spends "
        'privacy budget the nodes enforce (README, "Regulator statistics"). Give the '
        "regulator its own key file: without `--key-file` (or CREDITSHARE_KEY_FILE) the "
        "command uses, or makes, the key at the default path:",
        "",
        "```sh",
        "creditshare pki request --id my-regulator --role regulator --out regulator/identity",
        *(
            f"creditshare pki sign --ca-dir {_rel(layout.work_dir / 'pki' / chain, layout, shown)}"
            f"/ca --csr regulator/identity/signing.csr --out regulator/identity/{chain.value}.crt"
            for chain in chains
        ),
        'REGULATOR_KEY=$(CREDITSHARE_API_KEY="$OPERATOR_KEY" creditshare admin add-participant '
        f"--coordinator {url} --id my-regulator --role regulator "
        '--name "My Regulator" | tail -n 1)',
        "creditshare keygen --key-file regulator/paillier-key.json",
        f'CREDITSHARE_API_KEY="$REGULATOR_KEY" creditshare stats catalogue --coordinator {url} '
        "--department tax",
        f'CREDITSHARE_API_KEY="$REGULATOR_KEY" creditshare stats query --coordinator {url} '
        "--identity regulator/identity --key-file regulator/paillier-key.json "
        "--department tax --group-by chain,region --measure count --epsilon 1",
        "```",
        "",
        f"Node ports: {first.port} ({first.node_id}) to {layout.nodes[-1].port} "
        f"({layout.nodes[-1].node_id}), on {plan.host}.",
    ]
    return "\n".join(lines) + "\n"
