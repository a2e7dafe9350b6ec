"""One command-line entry point: ``creditshare ...``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from creditshare._logging import configure_logging
from creditshare._settings import load_settings
from creditshare.errors import CreditShareError

if TYPE_CHECKING:
    from creditshare.client import TrainedModel
    from creditshare.crypto import PrivateKey
    from creditshare.federated import TrainingConfig

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Privacy-preserving credit-information sharing.",
)
node_app = typer.Typer(no_args_is_help=True, help="Run or load a department's data node.")
coordinator_app = typer.Typer(no_args_is_help=True, help="Run the coordinator.")
admin_app = typer.Typer(no_args_is_help=True, help="Chain operator tasks.")
ledger_app = typer.Typer(no_args_is_help=True, help="Audit the verifiable query ledger.")
pki_app = typer.Typer(no_args_is_help=True, help="Chain CAs and mTLS certificates.")
enterprise_app = typer.Typer(no_args_is_help=True, help="An enterprise's keys and consents.")
bureau_app = typer.Typer(no_args_is_help=True, help="A credit bureau's federated training.")
db_app = typer.Typer(no_args_is_help=True, help="Database schemas (Alembic migrations).")
keys_app = typer.Typer(
    no_args_is_help=True, help="A bank's or bureau's Paillier keys registered at the coordinator."
)
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(admin_app, name="admin")
app.add_typer(ledger_app, name="ledger")
app.add_typer(pki_app, name="pki")
app.add_typer(enterprise_app, name="enterprise")
app.add_typer(bureau_app, name="bureau")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

console = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="TOML settings file")]


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
    """Turn the public default_credit split into a card_history node file and bureau files."""
    from creditshare.datasets import prepare_default_credit

    files = prepare_default_credit(source, out)
    console.print(
        f"{files.rows} rows: node import file {files.node_file}; bureau labels "
        f"{files.labels_file} and features {files.features_file}"
    )


@node_app.command("serve")
def node_serve(config: ConfigOption) -> None:
    """Serve the node's gRPC API until SIGTERM."""
    from creditshare.node import NodeSettings, serve

    settings = load_settings(NodeSettings, config)
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


@node_app.command("import")
def node_import(
    config: ConfigOption,
    files: Annotated[list[Path], typer.Argument(help="CSV files, imported in one transaction")],
) -> None:
    """Import department CSV files: all rows land, or none (the error says file and line)."""
    from creditshare.node import NodeSettings, import_into_node

    summary = import_into_node(load_settings(NodeSettings, config), files)
    console.print(
        f"imported {summary.rows} records from {len(summary.files)} file(s) "
        f"(sha256 {summary.sha256[:16]}…)"
    )


@node_app.command("access-log")
def node_access_log(config: ConfigOption, limit: Annotated[int, typer.Option(min=1)] = 50) -> None:
    """What this node answered, newest first (ledger index, requester, purpose, consent)."""
    from creditshare.node import NodeSettings, access_log_entries

    for row in access_log_entries(load_settings(NodeSettings, config), limit):
        console.print(
            f"{row.leaf_index:>8}  {row.answered_at:%Y-%m-%d %H:%M:%S}  {row.uscc}  "
            f"{row.requester}  {row.purpose}  consent {row.consent_id}"
        )


@coordinator_app.command("init-key")
def coordinator_init_key(
    out: Annotated[Path, typer.Option(help="where to write the PEM key (mode 0600)")],
) -> None:
    """Create the Ed25519 key that signs ledger tree heads; prints the public half for nodes."""
    from creditshare.coordinator._admin import init_log_key

    key = init_log_key(out)
    console.print(f"log signing key {key.verify_key.key_id} written to {out}")
    console.print(f'nodes\' log_public_key = "{key.verify_key.to_text()}"')


@coordinator_app.command("public-key")
def coordinator_public_key(
    key_file: Annotated[Path, typer.Option(help="the ledger signing key (PEM)")],
) -> None:
    """Print the public half of the ledger signing key: every node's log_public_key."""
    from creditshare.crypto import SigningKey

    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {key_file}: {exc.strerror}") from None
    print(SigningKey.from_pem(data).verify_key.to_text())


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
    role: Annotated[str, typer.Option(help="bank, bureau, department, enterprise or operator")],
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


ParticipantIdOption = Annotated[str, typer.Option("--id", help="participant id")]
CoordinatorOption = Annotated[str, typer.Option(help="coordinator base URL")]


def _participant_line(row: dict[str, Any]) -> str:
    state = "disabled" if row["disabled"] else "enabled"
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


@ledger_app.command("verify")
def ledger_verify(
    config: ConfigOption,
    uscc: Annotated[str | None, typer.Option(help="only this enterprise's entries")] = None,
) -> None:
    """Recompute every leaf hash and root from the database and check every signed head."""
    from creditshare.coordinator import CoordinatorSettings
    from creditshare.coordinator._admin import audit_ledger

    report = audit_ledger(load_settings(CoordinatorSettings, config), uscc)
    console.print(f"checked {report.leaves_checked} entries and {report.heads_checked} tree heads")
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not report.ok:
        raise typer.Exit(code=1)
    console.print("[green]ledger verified[/]")


ServiceArgument = Annotated[str, typer.Argument(help="whose database: coordinator or node")]
OptionalConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="the service's TOML settings file")
]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="database URL (instead of the one --config and the env give)"),
]


def _database_engine(service: str, config: Path | None, url: str | None) -> Any:
    """An engine on the service's database, without touching its schema."""
    from creditshare import migrations
    from creditshare._database import open_engine

    if service not in migrations.SERVICES:
        raise typer.BadParameter(
            f"choose one of {', '.join(migrations.SERVICES)}", param_hint="SERVICE"
        )
    if url is None:
        if config is None:
            raise typer.BadParameter("give --config (or --url)", param_hint="--config")
        if service == "coordinator":
            from creditshare.coordinator import CoordinatorSettings

            url = load_settings(CoordinatorSettings, config).database_url
        else:
            from creditshare.node import NodeSettings

            url = load_settings(NodeSettings, config).database_url
    return open_engine(url)


@db_app.command("upgrade")
def db_upgrade(
    service: ServiceArgument,
    config: OptionalConfig = None,
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Bring a database's schema to the newest revision (safe with replicas running)."""
    from creditshare import migrations

    engine = _database_engine(service, config, url)
    try:
        before = migrations.current(engine, service)
        after = migrations.upgrade(engine, service, revision)
    finally:
        engine.dispose()
    console.print(f"{service} database: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(
    service: ServiceArgument, config: OptionalConfig = None, url: UrlOption = None
) -> None:
    """Print the schema revision; exit 1 if it is behind the newest."""
    from creditshare import migrations

    engine = _database_engine(service, config, url)
    try:
        now = migrations.current(engine, service)
    finally:
        engine.dispose()
    newest = migrations.head(service)
    print(f"{service} database at {now or 'no revision'} (newest {newest})")
    if now != newest:
        raise typer.Exit(code=1)


@pki_app.command("init")
def pki_init(
    chain: Annotated[str, typer.Option(help="yrd, prd or bth")],
    out: Annotated[Path, typer.Option(help="folder for ca.crt and ca.key")],
) -> None:
    """Create a chain's certificate authority."""
    from creditshare.pki import init_ca

    files = init_ca(chain, out)
    console.print(f"CA for chain {chain}: {files.cert} (key {files.key}, mode 0600)")


@pki_app.command("issue")
def pki_issue(
    ca: Annotated[Path, typer.Option("--ca-dir", help="the chain CA's folder")],
    name: Annotated[str, typer.Option(help="node id or coordinator name")],
    role: Annotated[str, typer.Option(help="node or coordinator")],
    out: Annotated[Path, typer.Option(help="output folder")],
    host: Annotated[list[str] | None, typer.Option(help="DNS name or IP (repeatable)")] = None,
) -> None:
    """Issue a node (server) or coordinator (client) certificate from a chain CA."""
    from creditshare.errors import InvalidInputError
    from creditshare.pki import issue

    if role not in ("node", "coordinator"):
        raise InvalidInputError("role must be node or coordinator")
    files = issue(ca, name, role, out, hosts=host or ("localhost", "127.0.0.1"))  # type: ignore[arg-type]
    console.print(f"{role} certificate {files.cert} (key {files.key}, CA {files.ca})")


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
    signing_key: Annotated[Path, typer.Option(help="the enterprise's Ed25519 key file")],
    uscc: Annotated[str, typer.Option()],
    grantee: Annotated[str, typer.Option(help="bank or bureau participant id")],
    purpose: Annotated[str, typer.Option()] = "pre_loan_review",
    days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    max_uses: Annotated[int | None, typer.Option(min=1)] = None,
    chain: Annotated[list[str] | None, typer.Option(help="chains in scope (default all)")] = None,
    indicator: Annotated[
        list[str] | None, typer.Option(help="indicators in scope (default all)")
    ] = None,
) -> None:
    """Sign a consent for a grantee and submit it; prints the consent id."""
    from datetime import UTC, datetime, timedelta

    from creditshare.client import CreditShareClient, load_signing_key
    from creditshare.consent import ALL_INDICATORS, ConsentGrant
    from creditshare.identity import Chain

    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc,
        grantee,
        purpose,
        now,
        now + timedelta(days=days),
        chains=tuple(chain) if chain else tuple(Chain),
        indicators=tuple(indicator) if indicator else (ALL_INDICATORS,),
        max_uses=max_uses,
    )
    with CreditShareClient(coordinator, api_key=api_key) as client:
        stored = client.grant_consent(grant.sign(load_signing_key(signing_key)))
    print(stored["consent_id"])


@enterprise_app.command("revoke")
def enterprise_revoke(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    consent: Annotated[str, typer.Option(help="consent id")],
) -> None:
    """Revoke a consent; it stops working at once."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        client.revoke_consent(consent)
    console.print(f"consent {consent} revoked")


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
) -> None:
    """Every query about the enterprise, each checked for inclusion in the signed ledger."""
    from creditshare.client import CreditShareClient
    from creditshare.crypto import VerifyKey

    with CreditShareClient(coordinator, api_key=api_key) as client:
        entries = client.verified_enterprise_queries(uscc, VerifyKey.from_text(log_key))
    for e in entries:
        mark = "verified" if e.verified else f"NOT VERIFIED: {e.problem}"
        console.print(
            f"{e.index:>6}  {e.record.time:%Y-%m-%d %H:%M:%S}  {e.record.kind:<8} "
            f"{e.record.requester}  {e.record.purpose}  {mark}"
        )
    if not all(e.verified for e in entries):
        raise typer.Exit(code=1)


@bureau_app.command("train")
def bureau_train(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    labels: Annotated[Path, typer.Option(help="CSV with columns uscc,default (0/1)")],
    node: Annotated[list[str], typer.Option(help="data node to train with (repeatable)")],
    model_id: Annotated[str, typer.Option(help="id to publish the model under")],
    key_file: KeyFileOption = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    learning_rate: Annotated[float, typer.Option()] = 0.3,
    l2: Annotated[float, typer.Option()] = 0.0,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Align with the nodes by PSI, train under encryption, evaluate, publish the model."""
    import csv

    from creditshare.client import load_or_create_key
    from creditshare.errors import ImportRejectedError
    from creditshare.federated import TrainingConfig

    rows: dict[str, int] = {}
    with labels.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"uscc", "default"} <= set(reader.fieldnames):
            raise ImportRejectedError(str(labels), 1, "expected columns uscc,default")
        for row in reader:
            if row["default"] not in ("0", "1"):
                raise ImportRejectedError(
                    str(labels), reader.line_num, f"default must be 0 or 1, got {row['default']!r}"
                )
            rows[row["uscc"].strip().upper()] = int(row["default"])
    config = TrainingConfig(
        max_epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, l2=l2
    )
    key = load_or_create_key(key_file)
    # SIGTERM (an orchestrator, `kill`) ends training like Ctrl-C: the job is cancelled at
    # the coordinator and the worker processes stopped, instead of dying mid-job.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        model = _train_with_progress(
            coordinator, api_key, key, rows, node, model_id, config, description, epochs
        )
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in signal.Signals.__members__ else "SIGINT"
        notes = "; ".join(getattr(exc, "__notes__", [])) or "no training job was started"
        print(f"error: training interrupted by {name}: {notes}", file=sys.stderr)
        raise typer.Exit(code=128 + signal.Signals[name].value) from None
    console.print(
        f"published {model.model_id} (job {model.job_id}): {model.aligned_rows} aligned "
        f"rows, test AUC {model.test_auc:.4f}, KS {model.test_ks:.4f}"
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _train_with_progress(
    coordinator: str,
    api_key: str,
    key: PrivateKey,
    rows: dict[str, int],
    node: list[str],
    model_id: str,
    config: TrainingConfig,
    description: str,
    epochs: int,
) -> TrainedModel:
    from rich.progress import Progress

    from creditshare.client import CreditShareClient, train_model

    with (
        CreditShareClient(coordinator, api_key=api_key, private_key=key) as client,
        Progress(console=console) as bar,
    ):
        task = bar.add_task("training", total=epochs)

        def show(progress: dict[str, object]) -> None:
            epoch = int(str(progress.get("epoch", 0)))
            batches = int(str(progress.get("batches", 0))) or 1
            batch = int(str(progress.get("batch", 0)))
            bar.update(task, completed=epoch + batch / batches)
            if "validation_auc" in progress:
                bar.console.print(
                    f"epoch {epoch}: validation loss "
                    f"{float(str(progress['validation_loss'])):.4f}, "
                    f"AUC {float(str(progress['validation_auc'])):.4f}"
                )

        return train_model(client, rows, node, model_id, config, description, on_progress=show)


@bureau_app.command("cancel")
def bureau_cancel(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    job_id: Annotated[str, typer.Option("--id")],
    reason: Annotated[str, typer.Option(help="why (at most 500 characters)")] = "",
) -> None:
    """Cancel a training job (its bureau, or an operator): every node drops it and stops
    its workers, and its model id is free again."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        job = client.post(f"/v1/training-jobs/{job_id}/cancel", {"reason": reason})
    console.print(
        f"training job {job['id']} is {job['status']}; model id {job['model_id']} "
        "is free again" + (f" ({job['error']})" if job.get("error") else "")
    )


@bureau_app.command("job")
def bureau_job(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    job_id: Annotated[str, typer.Option("--id")],
) -> None:
    """Status, progress and the validation curve of a training job."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        job = client.training_job(job_id)
    print(json.dumps(job, indent=2))


@coordinator_app.command("serve")
def coordinator_serve(config: ConfigOption) -> None:
    """Serve the coordinator's HTTP API."""
    from creditshare.coordinator import CoordinatorSettings, serve

    settings = load_settings(CoordinatorSettings, config)
    configure_logging(settings.log_format, settings.log_level)
    serve(settings)


KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Paillier key file (default: $CREDITSHARE_KEY_FILE or "
        "~/.config/creditshare/paillier-key.json); created on first use",
    ),
]


@app.command()
def keygen(key_file: KeyFileOption = None, bits: Annotated[int, typer.Option()] = 2048) -> None:
    """Generate the requester's Paillier key pair locally (the private key never leaves)."""
    from creditshare.client import default_key_path, load_or_create_key

    path = key_file or default_key_path()
    existed = path.exists()
    key = load_or_create_key(path, bits)
    state = "existing" if existed else "new"
    console.print(f"{state} {key.public_key.bits}-bit key {key.public_key.fingerprint()} at {path}")


ApiKeyOption = Annotated[
    str,
    typer.Option("--api-key", envvar="CREDITSHARE_API_KEY", help="participant API key"),
]


@app.command()
def query(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    uscc: Annotated[str, typer.Option(help="enterprise's unified social credit code")],
    consent: Annotated[str, typer.Option(help="consent id the enterprise granted you")],
    api_key: ApiKeyOption,
    purpose: Annotated[str, typer.Option(help="purpose covered by the consent")] = (
        "pre_loan_review"
    ),
    model: Annotated[str, typer.Option(help="scoring model id")] = "sme-scorecard-v1",
    chain: Annotated[list[str] | None, typer.Option(help="limit to a chain (repeatable)")] = None,
    key_file: KeyFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Ask for an enterprise's credit profile and decrypt it locally."""
    from creditshare._render import print_profile
    from creditshare.client import CreditShareClient, load_or_create_key

    key = load_or_create_key(key_file)
    with CreditShareClient(coordinator, api_key=api_key, private_key=key) as client:
        profile = client.query(uscc, consent, purpose, model, chain or None)
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
        Path | None, typer.Option(help="keep files here instead of a temp dir")
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
            f"bank asked about {r.uscc} for {r.purpose}: answered {r.status} ({r.detail})"
            ", and the refusal was recorded"
        )
        console.print(f"access log of {result.access_log_uscc}, as the enterprise sees it:")
        for e in result.access_log:
            mark = "[green]inclusion verified[/]" if e.verified else f"[red]{e.problem}[/]"
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
        if verify:
            console.rule("[green]all queries verified" if result.verified else "[red]FAILED")
    if verify and not result.verified:
        raise typer.Exit(code=1)


@keys_app.command("register")
def keys_register(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    key_file: KeyFileOption = None,
) -> None:
    """Register the local key's public half (checked once there); prints its fingerprint."""
    from creditshare.client import CreditShareClient, load_or_create_key

    key = load_or_create_key(key_file)
    with CreditShareClient(coordinator, api_key=api_key, private_key=key) as client:
        registered = client.register_paillier_key()
    console.print(f"registered {registered['bits']}-bit Paillier key:")
    print(registered["fingerprint"])


@keys_app.command("list")
def keys_list(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
) -> None:
    """Every key registered to this participant, retired ones included."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        for key in client.paillier_keys():
            state = "active" if key["active"] else f"retired {key['retired_at']}"
            console.print(f"{key['fingerprint']}  {key['bits']} bits  {state}")


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


def main() -> None:
    try:
        app()
    except CreditShareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
