"""``creditshare bureau ...``: a credit bureau's federated training jobs."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from creditshare.cli._common import ApiKeyOption, IdentityOption, KeyFileOption, console

if TYPE_CHECKING:
    from creditshare.client import Identity, TrainedModel
    from creditshare.crypto import PrivateKey
    from creditshare.federated import TrainingConfig

__all__ = ["bureau_app"]

bureau_app = typer.Typer(no_args_is_help=True, help="A credit bureau's federated training.")


@bureau_app.command("train")
def bureau_train(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    identity: IdentityOption,
    labels: Annotated[Path, typer.Option(help="CSV with columns uscc,default (0/1)")],
    node: Annotated[list[str], typer.Option(help="data node to train with (repeatable)")],
    model_id: Annotated[str, typer.Option(help="id to publish the model under")],
    key_file: KeyFileOption = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    learning_rate: Annotated[float, typer.Option()] = 0.3,
    l2: Annotated[float, typer.Option()] = 0.0,
    early_stopping_rounds: Annotated[
        int, typer.Option(min=1, max=1000, help="epochs without a better validation loss")
    ] = 3,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Align with the nodes by PSI, train under encryption, evaluate, publish the model."""
    import csv

    from creditshare.client import Identity, load_or_create_key
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
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        l2=l2,
        early_stopping_rounds=early_stopping_rounds,
    )
    key = load_or_create_key(key_file)
    signer = Identity.load(identity)
    # SIGTERM (an orchestrator, `kill`) ends training like Ctrl-C: the job is cancelled at
    # the coordinator and the worker processes stopped, instead of dying mid-job.
    # Both explicitly: a process started in the background inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt for it; the job must still be cancelled.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        model = _train_with_progress(
            coordinator, api_key, key, signer, rows, node, model_id, config, description, epochs
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
    identity: Identity,
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
        CreditShareClient(
            coordinator, api_key=api_key, private_key=key, identity=identity
        ) as client,
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
