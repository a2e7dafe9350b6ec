"""The root ``creditshare`` app and its own commands: synth, prepare-default-credit, keygen,
query and demo (the sub-apps are added in ``creditshare.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    ChainName,
    IdentityOption,
    KeyFileOption,
    PurposeName,
    chain_values,
    console,
    paillier_key,
)

if TYPE_CHECKING:
    from creditshare.demo import MonitoringOutcome, StatisticsOutcome

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Privacy-preserving credit-information sharing.",
)


def _print_version(value: bool) -> None:
    if value:
        from creditshare import __version__

        print(f"creditshare {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the version and exit",
        ),
    ] = False,
) -> None:
    """Privacy-preserving credit-information sharing: every command below takes --help."""


@app.command()
def synth(
    enterprises: Annotated[int, typer.Option(min=1, max=1_000_000)] = 1000,
    seed: Annotated[int, typer.Option()] = 1,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("synth-data"),
) -> None:
    """Generate deterministic synthetic department data for the three chains."""
    from creditshare.synth import generate

    manifest = generate(enterprises, seed, out)
    for name, rows in sorted(manifest.files.items()):
        console.print(f"{rows:>8}  {out / name}")
    console.print(f"{len(manifest.cross_chain)} enterprises hold records in more than one chain")


@app.command("prepare-default-credit")
def prepare_default_credit_command(
    source: Annotated[Path, typer.Option(help="folder with the FATE guest/host CSV files")],
    out: Annotated[Path, typer.Option(help="output folder")],
) -> None:
    """Turn the public default_credit split into node import files (card_history; the
    bureau's own card_billing) and the bureau's labels (schemas: data/default_credit/schemas)."""
    from creditshare.datasets import prepare_default_credit

    files = prepare_default_credit(source, out)
    console.print(
        f"{files.rows} rows: node import files {files.node_file} (card_history) and "
        f"{files.bureau_node_file} (card_billing, the bureau's node); labels {files.labels_file}"
    )


@app.command()
def keygen(key_file: KeyFileOption = None, bits: Annotated[int, typer.Option()] = 2048) -> None:
    """Generate the requester's Paillier key pair locally (the private key never leaves)."""
    from creditshare.client import default_key_path, load_or_create_key

    path = key_file or default_key_path()
    existed = path.exists()
    key = load_or_create_key(path, bits)
    state = "existing" if existed else "new"
    console.print(f"{state} {key.public_key.bits}-bit key {key.public_key.fingerprint()} at {path}")


@app.command()
def query(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    uscc: Annotated[str, typer.Option(help="enterprise's unified social credit code")],
    consent: Annotated[str, typer.Option(help="consent id the enterprise granted you")],
    api_key: ApiKeyOption,
    identity: IdentityOption,
    purpose: Annotated[
        PurposeName, typer.Option(help="purpose covered by the consent")
    ] = "pre_loan_review",
    model: Annotated[
        str, typer.Option(help="scoring model id (`creditshare models` lists them)")
    ] = "sme-scorecard-v1",
    chain: Annotated[
        list[ChainName] | None, typer.Option(help="limit to a chain (repeatable)")
    ] = None,
    key_file: KeyFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Ask for an enterprise's credit profile and decrypt it locally."""
    from creditshare._render import print_profile
    from creditshare.client import CreditShareClient, Identity

    key = paillier_key(key_file)
    signer = Identity.load(identity)
    with CreditShareClient(
        coordinator, api_key=api_key, private_key=key, identity=signer
    ) as client:
        profile = client.query(uscc, consent, purpose, model, chain_values(chain))
    if as_json:
        doc = {
            "uscc": profile.uscc,
            "model_id": profile.model_id,
            "ledger_index": profile.raw["ledger_index"],
            "score": profile.score,
            "probability_of_default": profile.probability_of_default,
            "linear_score": profile.linear_score,
            "coverage": {"answered": profile.answered, "failed": profile.failed},
            "indicators": [
                {
                    "node": i.node,
                    "chain": i.chain,
                    "department": i.department,
                    "name": i.name,
                    "value": i.value,
                    "label": i.label,
                }
                for i in profile.indicators
            ],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print_profile(console, profile)


@app.command()
def demo(
    enterprises: Annotated[int, typer.Option(min=50, max=100_000)] = 300,
    seed: Annotated[int, typer.Option()] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    verify: Annotated[
        bool, typer.Option(help="recompute each score in plaintext and compare")
    ] = False,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="keep files here instead of a temp dir: a new or empty folder, or one an "
            "earlier demo run made (each run replaces that run's files with a fresh federation)"
        ),
    ] = None,
) -> None:
    """Run a whole federation on loopback and query it as a bank would."""
    from creditshare._render import print_profile
    from creditshare.demo import run_demo

    progress = None if as_json else (lambda message: console.print(f"[dim]» {message}[/]"))
    result = run_demo(enterprises, seed, verify=verify, work_dir=work_dir, on_progress=progress)
    if as_json:
        print(json.dumps(result.to_json(verify), ensure_ascii=False, indent=2))
    else:
        for item in result.queries:
            print_profile(console, item.profile, f"{item.label}: {item.name}")
            if item.verification is not None:
                mark = "[green]verified[/]" if item.verification.ok else "[red]MISMATCH[/]"
                console.print(
                    f"plaintext recomputation: {mark} "
                    f"(expected linear score {item.verification.expected_linear:.6f}, "
                    f"decrypted {item.profile.linear_score:.6f})"
                )
        console.rule("[bold]consent and the verifiable log")
        r = result.refusal
        console.print(
            f"bank asked about {r.uscc} for {r.purpose} under its pre_loan_review consent: "
            f"answered {r.status} ({r.detail}), and the refusal was recorded"
        )
        console.print(
            f"access log of {result.access_log_uscc}, as the enterprise sees it "
            f"(heads cosigned by a quorum of {result.witness_quorum} data nodes):"
        )
        for e in result.access_log:
            mark = (
                f"[green]inclusion verified, witnessed by {', '.join(e.witnessed_by)}[/]"
                if e.verified
                else f"[red]{e.problem}[/]"
            )
            console.print(
                f"  #{e.index:<4} {e.record.time:%H:%M:%S} {e.record.kind:<8} "
                f"{e.record.requester:<10} {e.record.purpose:<22} {mark}"
            )
        t = result.training
        console.rule("[bold]federated training")
        console.print(
            f"{t.model.model_id} trained on {', '.join(t.nodes)}: "
            f"{t.model.aligned_rows} rows aligned by PSI, {len(t.model.epochs)} epochs, "
            f"held-out AUC {t.model.test_auc:.3f}, KS {t.model.test_ks:.3f}"
        )
        for report in t.model.epochs:
            console.print(
                f"  epoch {report.epoch}: validation loss {report.validation_loss:.4f}, "
                f"AUC {report.validation_auc:.4f} ({report.seconds:.1f} s)"
            )
        mark = "[green]verified[/]" if t.verified else "[red]MISMATCH[/]"
        console.print(
            f"bank query for {t.uscc} with {t.model.model_id}: score {t.profile.score}, "
            f"plaintext recomputation {mark}"
        )
        _print_monitoring(result.monitoring)
        _print_statistics(result.statistics)
        if verify:
            console.rule(  # queries, access log, training, monitoring and statistics
                "[green]everything verified" if result.verified else "[red]FAILED"
            )
    if verify and not result.verified:
        raise typer.Exit(code=1)


def _print_monitoring(m: MonitoringOutcome) -> None:
    console.rule("[bold]post-loan monitoring")
    console.print(
        f"demo-bank watches {m.judged} and {m.quiet} for court judgments and dishonest-debtor "
        "listings (each under a post_loan_monitoring consent)"
    )
    for cycle in m.to_json()["cycles"]:
        console.print(
            f"  cycle {cycle['number']} (ledger entry {cycle['ledger_index']}): "
            f"{cycle['batches']} sealed batches{_batch_count(cycle)}"
        )
    sizes = ", ".join(str(s) for s in sorted(set(m.batch_sizes)))
    console.print(
        f"the coordinator stored {len(m.batch_sizes)} sealed batches, all of {sizes} bytes: "
        "it cannot tell which one holds an event"
    )
    for a in m.alerts:
        change = f", {a.indicator}: {_band(a.before)} → {_band(a.after)}" if a.indicator else ""
        console.print(
            f"[bold]alert[/] {a.uscc}: {a.signal.value} ({a.severity.value}) observed "
            f"{a.observed_at} on {a.node}{change}"
        )
    if not m.alerts:
        console.print("[red]no alert arrived[/]")
    for gap in m.gaps:
        console.print(f"[red]{gap}[/]")


def _print_statistics(s: StatisticsOutcome) -> None:
    from creditshare.cli._stats import print_cohort

    console.rule("[bold]regulator statistics")
    q = s.answer.query
    console.print(
        f"{s.regulator} asked every {q.department} node for {', '.join(q.measures)} by "
        f"{', '.join(q.group_by)}: each node added its own noise and encrypted its part under "
        "the regulator's key; the coordinator added ciphertexts it cannot read",
        markup=False,
    )
    print_cohort(s.answer)
    if s.problems is not None:
        if s.problems:
            console.print("[red]plaintext recomputation: MISMATCH[/]")
            for problem in s.problems:
                console.print(f"  {problem}", markup=False)
        else:
            console.print(
                "plaintext recomputation from the raw files: [green]every figure within its "
                "bound[/] of the nodes that released it (checked at the 1 − 10⁻⁹ bounds)"
            )


def _batch_count(cycle: dict[str, Any]) -> str:
    """Where a cycle's batch count comes from: one batch per subscription per node."""
    subscriptions, nodes = cycle.get("subscriptions"), cycle.get("nodes")
    if subscriptions and nodes and subscriptions * nodes == cycle["batches"]:
        return f" ({subscriptions} subscriptions × {nodes} nodes)"
    return ""


def _band(label: str | None) -> str:
    """An event's before/after value is a band label of the indicator, never a count
    (so "1" reads as the band "1", not as a number the node disclosed)."""
    return f'band "{label}"' if label else "(no record)"
