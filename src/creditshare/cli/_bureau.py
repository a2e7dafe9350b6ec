"""``creditshare bureau ...``: a credit bureau's federated training jobs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from creditshare.cli._common import (
    ApiKeyOption,
    IdentityOption,
    JobStatus,
    JsonOption,
    KeyFileOption,
    ModelType,
    console,
    paillier_key,
    print_json,
    print_table,
    when,
)
from creditshare.cli._lists import BeforeOption, LimitOption

if TYPE_CHECKING:
    from creditshare.client import Identity, TrainedModel
    from creditshare.crypto import PrivateKey
    from creditshare.federated import TrainingConfig
    from creditshare.trees import TreeConfig

__all__ = ["bureau_app"]

bureau_app = typer.Typer(no_args_is_help=True, help="A credit bureau's federated training.")


#: CLI option → config field, per model type: values are validated once, by the config
#: document (TrainingConfig for logistic, TreeConfig for gbdt).
_SHARED = {
    "--learning-rate": "learning_rate",
    "--l2": "l2",
    "--early-stopping-rounds": "early_stopping_rounds",
    "--validation-share": "validation_fraction",
    "--test-share": "test_fraction",
    "--seed": "seed",
}
_OPTIONS = {
    "logistic": {
        **_SHARED,
        "--epochs": "max_epochs",
        "--batch-size": "batch_size",
        "--clip": "feature_clip",
    },
    "gbdt": {
        **_SHARED,
        "--trees": "trees",
        "--max-depth": "max_depth",
        "--max-bins": "max_bins",
        "--min-child-weight": "min_child_weight",
        "--gamma": "gamma",
    },
}


@bureau_app.command("train")
def bureau_train(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    identity: IdentityOption,
    labels: Annotated[Path, typer.Option(help="CSV with columns uscc,default (0/1)")],
    node: Annotated[
        list[str],
        typer.Option(
            help="data node to train with (repeatable); a bureau's own features are served "
            "by a node it runs, named here like any other"
        ),
    ],
    model_id: Annotated[str, typer.Option(help="id to publish the model under")],
    key_file: KeyFileOption = None,
    model_type: Annotated[
        ModelType,
        typer.Option(
            help="logistic (vertical logistic regression) or gbdt (gradient-boosted trees)"
        ),
    ] = "logistic",
    epochs: Annotated[int | None, typer.Option(help="logistic: most epochs (default 10)")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="logistic: rows per batch (default 256)")
    ] = None,
    trees: Annotated[
        int | None, typer.Option(help="gbdt: most boosting rounds (default 100)")
    ] = None,
    max_depth: Annotated[int | None, typer.Option(help="gbdt: tree depth (default 3)")] = None,
    max_bins: Annotated[
        int | None, typer.Option(help="gbdt: most bins per feature (default 32)")
    ] = None,
    min_child_weight: Annotated[
        float | None, typer.Option(help="gbdt: least hessian sum in a child (default 1)")
    ] = None,
    gamma: Annotated[
        float | None, typer.Option(help="gbdt: least loss reduction of a split (default 0)")
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(help="initial learning rate, or gbdt's shrinkage (default 0.3)"),
    ] = None,
    l2: Annotated[
        float | None,
        typer.Option(help="L2 penalty (default 0), or gbdt's lambda on leaf weights (default 1)"),
    ] = None,
    clip: Annotated[
        float | None,
        typer.Option(
            help="clip standardised features at ±this (default 4; 0: no clipping); "
            "part of the published model"
        ),
    ] = None,
    early_stopping_rounds: Annotated[
        int | None,
        typer.Option(
            help=(
                "epochs (trees) without a better validation loss before stopping "
                "(logistic default 3; gbdt default 0 = never stop early)"
            )
        ),
    ] = None,
    validation_share: Annotated[
        float | None,
        typer.Option(help="share of the training rows used for early stopping (default 0.1)"),
    ] = None,
    test_share: Annotated[
        float | None,
        typer.Option(help="share of the aligned rows held out for the test metrics (default 0.3)"),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="seed of the test/validation split and batch order (default 42)"),
    ] = None,
    test_ids: Annotated[
        Path | None,
        typer.Option(
            help="the held-out ids: a CSV with a uscc column, or one USCC per line; each "
            "must be among the labels; the test split is those of them that align"
        ),
    ] = None,
    description: Annotated[str, typer.Option()] = "",
) -> None:
    """Align with the nodes by PSI, train under encryption, evaluate, publish the model.

    The job id is printed as soon as the coordinator accepts the job: follow it from
    another terminal with `creditshare bureau job`.
    """
    from creditshare.client import Identity

    rows = _read_labels(labels)
    given = {
        "--epochs": epochs,
        "--learning-rate": learning_rate,
        "--batch-size": batch_size,
        "--l2": l2,
        "--clip": clip,
        "--trees": trees,
        "--max-depth": max_depth,
        "--max-bins": max_bins,
        "--min-child-weight": min_child_weight,
        "--gamma": gamma,
        "--early-stopping-rounds": early_stopping_rounds,
        "--validation-share": validation_share,
        "--test-share": test_share,
        "--seed": seed,
    }
    config = _config(model_type, {k: v for k, v in given.items() if v is not None})
    held_out = _read_test_ids(test_ids, rows) if test_ids is not None else None
    key = paillier_key(key_file)
    signer = Identity.load(identity)
    # SIGTERM (an orchestrator, `kill`) ends training like Ctrl-C: the job is cancelled at
    # the coordinator and the worker processes stopped, instead of dying mid-job.
    # Both explicitly: a process started in the background inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt for it; the job must still be cancelled.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        model = _train_with_progress(
            coordinator,
            api_key,
            key,
            signer,
            rows,
            node,
            model_id,
            config,
            description,
            held_out,
        )
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in signal.Signals.__members__ else "SIGINT"
        notes = "; ".join(getattr(exc, "__notes__", [])) or "no training job was started"
        print(f"error: training interrupted by {name}: {notes}", file=sys.stderr)
        raise typer.Exit(code=128 + signal.Signals[name].value) from None
    rounds = f", {len(model.trees)} trees" if model_type == "gbdt" else ""
    console.print(
        f"published {model.model_id} (job {model.job_id}): {model.aligned_rows} aligned "
        f"rows, {len(model.test_ids)} held out{rounds}: test AUC {model.test_auc:.4f}, "
        f"KS {model.test_ks:.4f}"
    )


def _config(model_type: str, given: dict[str, object]) -> TrainingConfig | TreeConfig:
    """The one validation of the options: the model type's config document (its errors
    naming the option); an option of the other model type is refused by name."""
    from creditshare.errors import InvalidInputError
    from creditshare.federated import TrainingConfig
    from creditshare.trees import TreeConfig

    if model_type not in _OPTIONS:
        raise InvalidInputError(f"--model-type: expected logistic or gbdt, got {model_type!r}")
    options = _OPTIONS[model_type]
    foreign = [option for option in given if option not in options]
    if foreign:
        raise InvalidInputError(f"{', '.join(foreign)}: not an option of --model-type {model_type}")
    document = {options[option]: value for option, value in given.items()}
    try:
        if model_type == "gbdt":
            return TreeConfig.from_document({"model_type": "gbdt", **document})
        return TrainingConfig.from_document(document)
    except InvalidInputError as exc:
        message = str(exc)
        for option, name in options.items():
            for kind in ("training", "tree"):
                message = message.replace(f"{kind} setting {name}:", f"{option}:")
        raise InvalidInputError(message) from None


def _read_labels(path: Path) -> dict[str, int]:
    from creditshare.client import read_labels

    return read_labels(path.read_bytes(), str(path))


def _read_test_ids(path: Path, labels: dict[str, int]) -> set[str]:
    """The held-out USCCs: a CSV with a ``uscc`` column, or one per line. Each must be
    among the labels (``file, line N: reason`` otherwise)."""
    import csv

    from creditshare.errors import ImportRejectedError

    with path.open(encoding="utf-8-sig", newline="") as handle:
        lines = list(csv.reader(handle))
    header = [c.strip().lower() for c in lines[0]] if lines else []
    column, first = (header.index("uscc"), 2) if "uscc" in header else (0, 1)
    if column == 0 and first == 1 and any(len(line) > 1 for line in lines):
        raise ImportRejectedError(str(path), 1, "expected a uscc column, or one USCC per line")
    ids: set[str] = set()
    for number, line in enumerate(lines[first - 1 :], start=first):
        if not line or not "".join(line).strip():
            continue
        if column >= len(line):
            raise ImportRejectedError(str(path), number, "the row has no uscc value")
        uscc = line[column].strip().upper()
        if uscc not in labels:
            raise ImportRejectedError(str(path), number, f"{uscc!r} is not among the labels")
        ids.add(uscc)
    if not ids:
        raise ImportRejectedError(str(path), 1, "no held-out ids")
    return ids


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
    config: TrainingConfig | TreeConfig,
    description: str,
    test_ids: set[str] | None,
) -> TrainedModel:
    from rich.progress import Progress

    from creditshare.client import CreditShareClient, train_model

    with (
        CreditShareClient(
            coordinator, api_key=api_key, private_key=key, identity=identity
        ) as client,
        Progress(console=console) as bar,
    ):
        from creditshare.trees import TreeConfig

        trees = isinstance(config, TreeConfig)
        total = config.trees if isinstance(config, TreeConfig) else config.max_epochs
        task = bar.add_task("training", total=total)

        def started(job_id: str) -> None:
            bar.console.print(
                f"training job {job_id} started; follow it with "
                f"`creditshare bureau job --coordinator {coordinator} --id {job_id}`"
            )

        def show(progress: dict[str, object]) -> None:
            epoch = int(str(progress.get("epoch", 0)))
            batches = int(str(progress.get("batches", 0))) or 1
            batch = int(str(progress.get("batch", 0)))
            bar.update(task, completed=epoch + batch / batches)
            if progress.get("validation_auc") is not None:
                bar.console.print(
                    f"{'tree' if trees else 'epoch'} {epoch}: validation loss "
                    f"{float(str(progress['validation_loss'])):.4f}, "
                    f"AUC {float(str(progress['validation_auc'])):.4f}"
                )

        return train_model(
            client,
            rows,
            node,
            model_id,
            config,
            description,
            on_progress=show,
            test_ids=test_ids,
            on_start=started,
        )


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
        job = client.cancel_training_job(job_id, reason)
    console.print(
        f"training job {job['id']} is {job['status']}; model id {job['model_id']} "
        "is free again" + (f" ({job['error']})" if job.get("error") else "")
    )


@bureau_app.command("job")
def bureau_job(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    job_id: Annotated[str, typer.Option("--id")],
    as_json: JsonOption = False,
) -> None:
    """Status, progress and the validation curve of a training job (--json: the whole
    job as the coordinator keeps it, config and sizes included)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        job = client.training_job(job_id)
    if as_json:
        print_json(job)
        return
    console.print(
        f"training job {job['id']} of {job.get('bureau')}: model {job.get('model_id')} "
        f"({job.get('model_type', 'logistic')}), {job.get('status')}, {_progress(job)}; "
        f"nodes {', '.join(job.get('nodes') or [])}",
        markup=False,
    )
    if job.get("error"):
        console.print(f"error: {job['error']}", markup=False)
    unit = "tree" if job.get("model_type") == "gbdt" else "epoch"
    print_table(
        [
            (unit, lambda p: p.get("epoch")),
            ("validation loss", lambda p: p.get("validation_loss")),
            ("validation AUC", lambda p: p.get("validation_auc")),
            ("seconds", lambda p: p.get("seconds")),
        ],
        job.get("history") or [],
        empty=f"no {unit} finished yet",
    )


def _progress(job: dict[str, Any]) -> str:
    """Where a job is: epochs (trees) done of the most it may take, and the batch."""
    progress = job.get("progress") or {}
    config = job.get("config") or {}
    gbdt = job.get("model_type") == "gbdt"
    most = config.get("trees" if gbdt else "max_epochs")
    done = progress.get("epoch", 0)
    text = f"{'tree' if gbdt else 'epoch'} {done}" + (f"/{most}" if most else "")
    if progress.get("batches"):
        text += f", batch {progress.get('batch', 0)}/{progress['batches']}"
    return text


@bureau_app.command("jobs")
def bureau_jobs(
    coordinator: Annotated[str, typer.Option(help="coordinator base URL")],
    api_key: ApiKeyOption,
    status: Annotated[JobStatus | None, typer.Option(help="only jobs in this state")] = None,
    limit: LimitOption = 100,
    before: BeforeOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the bureau's training jobs, newest first (an operator's key: every bureau's)."""
    from creditshare.client import CreditShareClient

    with CreditShareClient(coordinator, api_key=api_key) as client:
        jobs = client.training_jobs(status, limit=limit, before=before)
    if as_json:
        print_json(jobs)
        return
    print_table(
        [
            ("job", lambda j: j["id"]),
            ("model", lambda j: j.get("model_id")),
            ("type", lambda j: j.get("model_type")),
            ("bureau", lambda j: j.get("bureau")),
            ("status", lambda j: j.get("status")),
            ("progress", _progress),
            ("created", lambda j: when(j.get("created_at"))),
            ("error", lambda j: j.get("error")),
        ],
        jobs,
        empty="no training jobs" + (f" {status}" if status else ""),
    )
