"""One command-line entry point: ``creditshare ...``.

The root app and its own commands live in ``_commands``; each sub-app (``creditshare node``,
``creditshare admin``, ...) in a module of its own, added here in the order ``--help`` lists them.
"""

from __future__ import annotations

import sys

from creditshare.cli._admin import admin_app
from creditshare.cli._alerts import alerts_app, monitoring_app
from creditshare.cli._bureau import bureau_app
from creditshare.cli._chain import chain_app
from creditshare.cli._commands import app
from creditshare.cli._console import console_command
from creditshare.cli._coordinator import coordinator_app
from creditshare.cli._db import db_app
from creditshare.cli._enterprise import enterprise_app
from creditshare.cli._keys import keys_app
from creditshare.cli._ledger import ledger_app
from creditshare.cli._lists import (
    consents_command,
    credentials_command,
    indicators_command,
    models_command,
    nodes_command,
)
from creditshare.cli._node import node_app
from creditshare.cli._pki import pki_app
from creditshare.cli._schema import schema_app
from creditshare.cli._stats import stats_app
from creditshare.errors import CreditShareError, ProblemError

__all__ = ["app", "main"]

node_app.add_typer(schema_app, name="schema")
app.add_typer(chain_app, name="chain")
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(admin_app, name="admin")
app.add_typer(ledger_app, name="ledger")
app.add_typer(pki_app, name="pki")
app.add_typer(enterprise_app, name="enterprise")
app.add_typer(bureau_app, name="bureau")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(alerts_app, name="alerts")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(stats_app, name="stats")
app.command("console")(console_command)
app.command("models")(models_command)
app.command("nodes")(nodes_command)
app.command("indicators")(indicators_command)
app.command("consents")(consents_command)
app.command("credentials")(credentials_command)


def main() -> None:
    """Run the app; a CreditShareError ends it with ``error: ...`` and exit code 2, no traceback."""
    try:
        app()
    except CreditShareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        # A query no node answered: each node's own reason (a refused credential, a
        # revoked consent...) says more than the 503 does.
        failed = getattr(exc, "body", {}).get("failed") if isinstance(exc, ProblemError) else None
        for node in failed if isinstance(failed, list) else ():
            if isinstance(node, dict):
                print(f"  {node.get('node')}: {node.get('reason')}", file=sys.stderr)
        sys.exit(2)
