"""The CLI's list commands: every one takes --json (found by walking the command tree,
so a new list command cannot forget it), prints a table with headers otherwise, and
the values options accept are the ones the code accepts, listed in --help.

Against a fake coordinator (httpx.MockTransport); tests/e2e/test_cli_lists.py runs the
same commands against a real federation.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Annotated, Any, get_args

import httpx
import pytest
import typer
from typer.testing import CliRunner

import creditshare
import creditshare.client
from creditshare.cli import app
from creditshare.cli._common import (
    CHAINS,
    JOB_STATUSES,
    MODEL_TYPES,
    PURPOSES,
    ROLES,
)
from creditshare.consent import Purpose
from creditshare.coordinator._listing import JOB_STATUSES as COORDINATOR_JOB_STATUSES
from creditshare.coordinator._participants import Role
from creditshare.coordinator._settings import ModelEntry
from creditshare.identity import Chain

runner = CliRunner()
#: Wide enough that rich's help puts each option's choices on one line.
WIDE = {"COLUMNS": "250"}

#: A command is a list when its name says so (``list``, a plural, a log) or its help
#: begins with "List".
LIST_NAME = re.compile(r"^(list|.+s|.+-log)$")
#: Commands whose name looks like a list's but that are not one: what they print.
NOT_LISTS: dict[str, str] = {}
#: Lists the heuristic must find (so that it cannot quietly find nothing).
KNOWN_LISTS = {
    "models",
    "nodes",
    "indicators",
    "consents",
    "admin list",
    "enterprise consents",
    "enterprise queries",
    "bureau jobs",
    "keys list",
    "node imports",
    "node refusals",
    "node access-log",
    "alerts list",
    "alerts subscriptions",
    "monitoring cycles",
    "credentials",
    "admin revocation-lists",
    "alerts signals",
}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    if hasattr(command, "list_commands") and hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _is_list(name: str, command: Any) -> bool:
    first_line = (command.help or "").strip()
    return bool(LIST_NAME.match(name.rsplit(" ", 1)[-1])) or first_line.startswith("List")


def _without_json(cli: Any) -> list[str]:
    missing = []
    for name, command in _commands(cli):
        if not _is_list(name, command) or name in NOT_LISTS:
            continue
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--json" not in options:
            missing.append(name)
    return missing


def test_every_list_command_takes_json() -> None:
    cli = typer.main.get_command(app)
    found = {name for name, command in _commands(cli) if _is_list(name, command)}
    assert found >= KNOWN_LISTS, KNOWN_LISTS - found
    assert _without_json(cli) == [], "list commands without --json"


def test_the_check_catches_a_list_command_without_json() -> None:
    other = typer.Typer()

    @other.command("widgets")
    def widgets() -> None:
        """Widgets."""

    @other.command("show")
    def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """List the gadgets."""

    @other.command("count")
    def count() -> None:
        """List how many."""

    assert sorted(_without_json(typer.main.get_command(other))) == ["count", "widgets"]


# -- valid values ------------------------------------------------------------------------


def test_choices_are_the_values_the_code_accepts() -> None:
    assert tuple(r.value for r in Role) == ROLES
    assert tuple(p.value for p in Purpose) == PURPOSES
    assert tuple(c.value for c in Chain) == CHAINS
    assert JOB_STATUSES == COORDINATOR_JOB_STATUSES
    assert get_args(ModelEntry.model_fields["model_type"].annotation) == MODEL_TYPES


@pytest.mark.parametrize(
    ("command", "option", "values"),
    [
        ("admin add-participant", "--role", ROLES),
        ("admin list", "--role", ROLES),
        ("query", "--purpose", PURPOSES),
        ("query", "--chain", CHAINS),
        ("enterprise grant", "--purpose", PURPOSES),
        ("enterprise grant", "--chain", CHAINS),
        ("alerts subscribe", "--chain", CHAINS),
        ("alerts subscriptions", "--status", ("active", "ended")),
        ("bureau train", "--model-type", MODEL_TYPES),
        ("bureau jobs", "--status", JOB_STATUSES),
        ("pki init", "--chain", CHAINS),
        ("pki request", "--role", (*ROLES, "regulator", "node", "coordinator")),
    ],
)
def test_help_lists_the_valid_values(command: str, option: str, values: tuple[str, ...]) -> None:
    shown = runner.invoke(app, [*command.split(), "--help"], env=WIDE)
    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.stdout.splitlines() if f" {option} " in line)
    assert all(value in line for value in values), line


def test_help_says_where_indicator_and_model_names_come_from() -> None:
    grant = runner.invoke(app, ["enterprise", "grant", "--help"], env=WIDE).stdout
    assert "`creditshare indicators`" in grant
    query = runner.invoke(app, ["query", "--help"], env=WIDE).stdout
    assert "`creditshare models`" in query


def test_a_value_not_listed_is_refused_naming_the_choices() -> None:
    result = runner.invoke(
        app,
        ["admin", "list", "--coordinator", "http://c.test", "--api-key", "k", "--role", "x"],
        env=WIDE,
    )
    assert result.exit_code == 2
    assert "'x' is not one of" in result.output and "'enterprise'" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"creditshare {creditshare.__version__}\n"


# -- tables and JSON against a fake coordinator ------------------------------------------

NODES_BEFORE = [
    {"id": "yrd-tax", "chain": "yrd", "department": "tax", "address": "127.0.0.1:1"},
]
NODES_AFTER = [
    {
        **NODES_BEFORE[0],
        "reachable": True,
        "last_answer_at": "2026-11-30T12:00:01.5+00:00",
        "last_latency_ms": 12.5,
        "version": "0.1.0",
        "last_error": None,
    },
    {
        "id": "yrd-court",
        "chain": "yrd",
        "department": "court",
        "address": "127.0.0.1:2",
        "reachable": None,
        "last_answer_at": None,
        "last_latency_ms": None,
        "version": None,
        "last_error": None,
    },
]
JOB_ID = "ab" * 16
JOB: dict[str, Any] = {
    "id": JOB_ID,
    "bureau": "bureau-1",
    "model_id": "m1",
    "model_type": "logistic",
    "status": "failed",
    "nodes": ["yrd-tax"],
    "config": {"max_epochs": 10},
    "progress": {"epoch": 2, "batch": 3, "batches": 7},
    "sizes": {},
    "error": "node yrd-tax: [bold]gone[/bold]",
    "created_at": "2026-11-30T12:00:00+00:00",
    "updated_at": "2026-11-30T12:05:00+00:00",
}


class Fake:
    """GET routes answering fixed JSON; every request kept."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path in self.routes:
            return httpx.Response(200, json=self.routes[request.url.path])
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": "no"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    made = Fake({})
    patched = functools.partial(
        creditshare.client.CreditShareClient, transport=httpx.MockTransport(made.handler)
    )
    monkeypatch.setattr(creditshare.client, "CreditShareClient", patched)
    monkeypatch.setenv("CREDITSHARE_API_KEY", "cs_test")
    return made


def _run(*args: str) -> str:
    result = runner.invoke(app, [*args, "--coordinator", "http://coordinator.test"], env=WIDE)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def test_nodes_show_reachability_only_when_the_coordinator_reports_it(fake: Fake) -> None:
    fake.routes["/v1/nodes"] = NODES_BEFORE
    table = _run("nodes")
    assert "yrd-tax" in table and "address" in table and "reachable" not in table
    fake.routes["/v1/nodes"] = NODES_AFTER
    table = _run("nodes")
    header = next(line for line in table.splitlines() if "reachable" in line)
    assert all(h in header for h in ("last answer", "latency ms", "version"))
    tax = next(line for line in table.splitlines() if "yrd-tax" in line)
    assert "yes" in tax and "2026-11-30 12:00:01" in tax and "12.5" in tax and "0.1.0" in tax
    court = next(line for line in table.splitlines() if "yrd-court" in line)
    assert "not probed yet" in court
    assert json.loads(_run("nodes", "--json")) == NODES_AFTER


def test_bureau_jobs_table_and_json(fake: Fake) -> None:
    fake.routes["/v1/training-jobs"] = [JOB]
    table = _run("bureau", "jobs", "--status", "failed", "--limit", "7")
    row = next(line for line in table.splitlines() if JOB_ID in line)
    assert "epoch 2/10, batch 3/7" in row and "2026-11-30 12:00:00" in row
    assert "[bold]gone[/bold]" in row  # an error is printed as sent, never as markup
    assert json.loads(_run("bureau", "jobs", "--json")) == [JOB]
    params = fake.requests[0].url.params
    assert (params["status"], params["limit"]) == ("failed", "7") and "before" not in params


def test_bureau_job_shows_the_curve(fake: Fake) -> None:
    history = [
        {"epoch": 1, "validation_loss": 0.61234, "validation_auc": 0.7, "seconds": 3.0},
        {"epoch": 2, "validation_loss": 0.5, "validation_auc": 0.75, "seconds": 2.5},
    ]
    fake.routes[f"/v1/training-jobs/{JOB_ID}"] = {**JOB, "history": history}
    out = _run("bureau", "job", "--id", JOB_ID)
    assert "validation loss" in out and "0.6123" in out and "0.75" in out
    assert json.loads(_run("bureau", "job", "--id", JOB_ID, "--json"))["history"] == history


def test_models_show_metrics(fake: Fake) -> None:
    fake.routes["/v1/models"] = [
        {"id": "sme-scorecard-v1", "origin": "published", "model_type": "logistic"},
        {
            "id": "m1",
            "origin": "trained",
            "model_type": "gbdt",
            "trained_by": "bureau-1",
            "metrics": {"test_auc": 0.81234, "test_ks": 0.4},
        },
    ]
    table = _run("models")
    row = next(line for line in table.splitlines() if " m1 " in line)
    assert all(x in row for x in ("gbdt", "bureau-1", "0.8123", "0.4000"))
    assert [m["id"] for m in json.loads(_run("models", "--json"))] == ["sme-scorecard-v1", "m1"]


def test_admin_list_asks_for_the_role(fake: Fake) -> None:
    fake.routes["/v1/participants"] = [
        {
            "id": "b1",
            "role": "bank",
            "name": "Bank One",
            "uscc": None,
            "disabled": True,
            "created_at": "2026-11-30T08:00:00+00:00",
        }
    ]
    table = _run("admin", "list", "--role", "bank")
    assert fake.requests[0].url.params["role"] == "bank"
    row = next(line for line in table.splitlines() if " b1 " in line)
    assert "Bank One" in row and "yes" in row and "2026-11-30 08:00:00" in row


def test_an_empty_list_says_so_and_its_json_is_an_empty_array(fake: Fake) -> None:
    fake.routes["/v1/consents"] = []
    assert _run("consents").strip() == "no consents"
    assert json.loads(_run("enterprise", "consents", "--json")) == []


def test_webhook_deliveries_json(fake: Fake) -> None:
    fake.routes["/v1/webhook"] = {"url": "https://bank.test/h", "created_at": "2026-11-30"}
    fake.routes["/v1/webhook/deliveries"] = [
        {"id": 1, "status": "failed", "attempts": 3, "last_error": "HTTP 500"}
    ]
    doc = json.loads(_run("alerts", "webhook", "show", "--deliveries", "--json"))
    assert doc["url"] == "https://bank.test/h" and doc["deliveries"][0]["attempts"] == 3
    table = _run("alerts", "webhook", "show", "--deliveries")
    assert "attempts" in table and "HTTP 500" in table
