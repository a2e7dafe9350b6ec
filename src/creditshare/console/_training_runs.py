"""Training jobs a bureau's console drives: one background thread per job, in one registry.

``train_model`` runs for minutes and drives every step of a job from the bureau's side
(its labels and Paillier key are here), so the console runs it in a thread of its own
process, not in a request. The registry keeps what a page needs to know of each run:
the job id as soon as the coordinator accepted the job (``on_start``), the error that
ended it (kept whole and shown, never lost in a log), and once it finished, the ROC and
KS curves of its test split, computed here from the labels the console holds and the
scores the published model gives (``TrainedModel.test_scores``).

Cancelling asks the coordinator to cancel the job (every node drops it) and stops the
thread at its next step: the next progress report raises, and any call to the
coordinator after the cancel is refused, so the thread never keeps driving a job that
was cancelled. The uploaded labels are written 0600 under ``work_dir/labels`` and go
nowhere else (the SDK sends nodes encrypted labels only, of the rows it aligned).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from creditshare.client import CreditShareClient, TrainedModel, read_labels, train_model
from creditshare.console._charts import KsCurve, ks_curve, roc_points, thin
from creditshare.errors import CreditShareError
from creditshare.federated import TrainingConfig
from creditshare.trees import TreeConfig

__all__ = ["ALL_OPTIONS", "OPTIONS", "Curves", "Run", "Runs", "job_config", "read_labels"]

log = logging.getLogger("creditshare.console")

#: How long a cancel waits for the thread to stop before the page says "stopping".
STOP_WAIT_SECONDS = 30.0


class _CancelledError(Exception):
    """Raised inside the training thread at its next step once a run is cancelled."""


@dataclass(frozen=True, slots=True)
class Curves:
    """What the console keeps of a finished run's test split: its ROC and KS curves."""

    roc: list[tuple[float, float]]
    ks: KsCurve | None
    test_auc: float
    test_ks: float
    aligned_rows: int
    test_rows: int

    @classmethod
    def of(cls, model: TrainedModel, labels: Mapping[str, int]) -> Curves:
        y = [labels[i] for i in model.test_ids]
        scores = list(model.test_scores)
        curve = ks_curve(y, scores)
        if curve is not None:
            curve = KsCurve(
                thin(curve.defaults, keep=curve.at),
                thin(curve.others, keep=curve.at),
                curve.ks,
                curve.at,
            )
        return cls(
            thin(roc_points(y, scores)),
            curve,
            model.test_auc,
            model.test_ks,
            model.aligned_rows,
            len(model.test_ids),
        )


@dataclass
class Run:
    """One job this console started: its state as the pages show it."""

    key: str
    model_id: str
    model_type: str
    nodes: list[str]
    labels_file: Path
    started_at: datetime
    job_id: str | None = None
    #: starting, running, finished, failed, cancelled
    state: str = "starting"
    error: str = ""
    #: The refusal that ended the run before its job existed (shown on the form).
    refusal: CreditShareError | None = None
    curves: Curves | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: Set while the coordinator is asked to cancel the job: the thread's next call may
    #: be refused for it before ``stop`` is set, and that ends the run as cancelled.
    cancel_asked: threading.Event = field(default_factory=threading.Event)
    #: Set once the job id is known or the run ended, whichever comes first.
    known: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _started(self, job_id: str) -> None:
        self.job_id = job_id
        self.state = "running"
        self.known.set()

    def _step(self, _progress: dict[str, Any]) -> None:
        if self.stop.is_set():
            raise _CancelledError


@dataclass
class Runs:
    """Every run of this console (in memory: a restart forgets them, the coordinator
    keeps the jobs)."""

    work_dir: Path
    #: Opens a client of its own for each run (the SDK's connection is not shared
    #: between a request thread and a training thread).
    connect: Callable[[], CreditShareClient]
    _runs: dict[str, Run] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def all(self) -> list[Run]:
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.started_at, reverse=True)

    def by_job(self, job_id: str) -> Run | None:
        with self._lock:
            return next((r for r in self._runs.values() if r.job_id == job_id), None)

    def forget(self, run: Run) -> None:
        """Drop a run that never got a job (refused at start), and its labels file."""
        with self._lock:
            self._runs.pop(run.key, None)
        run.labels_file.unlink(missing_ok=True)

    def labels_path(self, key: str) -> Path:
        folder = self.work_dir / "labels"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        return folder / f"{key}.csv"

    def save_labels(self, data: bytes) -> tuple[str, Path]:
        """A new run key and the uploaded labels written 0600 under it."""
        key = secrets.token_hex(8)
        path = self.labels_path(key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return key, path

    def start(
        self,
        key: str,
        labels_file: Path,
        labels: Mapping[str, int],
        nodes: Sequence[str],
        model_id: str,
        config: TrainingConfig | TreeConfig,
        description: str,
    ) -> Run:
        """Start training in a thread; returns at once (wait on ``run.known``)."""
        run = Run(
            key,
            model_id,
            "gbdt" if isinstance(config, TreeConfig) else "logistic",
            list(nodes),
            labels_file,
            datetime.now(UTC),
        )
        with self._lock:
            self._runs[key] = run
        run.thread = threading.Thread(
            target=self._drive,
            args=(run, dict(labels), list(nodes), model_id, config, description),
            name=f"training-{key}",
            daemon=True,
        )
        run.thread.start()
        return run

    def _drive(
        self,
        run: Run,
        labels: dict[str, int],
        nodes: list[str],
        model_id: str,
        config: TrainingConfig | TreeConfig,
        description: str,
    ) -> None:
        try:
            with self.connect() as client:
                model = train_model(
                    client,
                    labels,
                    nodes,
                    model_id,
                    config,
                    description,
                    on_progress=run._step,
                    on_start=run._started,
                )
            run.curves = Curves.of(model, labels)
            run.state = "finished"
        except _CancelledError:
            run.state = "cancelled"
        except CreditShareError as exc:
            stopped = run.stop.is_set() or run.cancel_asked.is_set()
            run.state = "cancelled" if stopped else "failed"
            run.error = str(exc)
            if run.job_id is None:
                run.refusal = exc
        except Exception as exc:  # a bug must still end the run visibly, not silently
            log.exception("training run %s (job %s) failed", run.key, run.job_id)
            run.state = "failed"
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            run.known.set()

    @contextlib.contextmanager
    def cancelling(self, run: Run | None) -> Iterator[None]:
        """Around asking the coordinator to cancel ``run``'s job: the thread's calls
        refused meanwhile (the job is cancelled) end the run as cancelled, not failed;
        a refused cancel leaves the run as it was."""
        if run is None:
            yield
            return
        run.cancel_asked.set()
        try:
            yield
        except BaseException:
            run.cancel_asked.clear()
            raise

    def cancel(self, run: Run) -> None:
        """Stop driving the run (the coordinator was told to cancel its job first) and
        wait a little for the thread to stop."""
        run.stop.set()
        if run.thread is not None:
            run.thread.join(STOP_WAIT_SECONDS)

    def stop_all(self, cancel_job: Callable[[str], object]) -> None:
        """At shutdown: cancel every job still driven here, so none waits for the
        coordinator's idle timeout, and stop the threads."""
        for run in self.all():
            if run.alive:
                run.stop.set()
                if run.job_id is not None:
                    with contextlib.suppress(CreditShareError):
                        cancel_job(run.job_id)
        for run in self.all():
            if run.thread is not None:
                run.thread.join(STOP_WAIT_SECONDS)


# -- what a run starts from: the form's labels file and options -------------------------

#: The form's option fields per model type (named as the config documents name them, so
#: a refusal lands on its field); ``SHARED`` are options of both.
SHARED = (
    "learning_rate",
    "l2",
    "early_stopping_rounds",
    "validation_fraction",
    "test_fraction",
    "seed",
)
OPTIONS: dict[str, tuple[str, ...]] = {
    "logistic": ("max_epochs", "batch_size", "feature_clip", *SHARED),
    "gbdt": ("trees", "max_depth", "max_bins", "min_child_weight", "gamma", *SHARED),
}
ALL_OPTIONS = tuple(dict.fromkeys(OPTIONS["logistic"] + OPTIONS["gbdt"]))


def job_config(
    model_type: str, given: Mapping[str, str]
) -> tuple[TrainingConfig | TreeConfig | None, dict[str, str]]:
    """The model type's config from the form's non-empty option fields, or the
    messages by field of what is wrong (an option of the other model type is refused
    by name, as the CLI does)."""
    if model_type not in OPTIONS:
        return None, {"model_type": f"expected logistic or gbdt, got {model_type!r}"}
    chosen = {name: value.strip() for name, value in given.items() if value.strip()}
    foreign = {
        name: f"not an option of {model_type} models"
        for name in chosen
        if name not in OPTIONS[model_type]
    }
    if foreign:
        return None, foreign
    kind: type[TrainingConfig] | type[TreeConfig] = (
        TreeConfig if model_type == "gbdt" else TrainingConfig
    )
    try:
        return kind.model_validate(chosen), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            where = str(error["loc"][0]) if error["loc"] else _cross_field(error["msg"])
            errors[where] = error["msg"].removeprefix("Value error, ")
        return None, errors


def _cross_field(message: str) -> str:
    """The field a whole-document check concerns: the first option it names."""
    return next((name for name in ALL_OPTIONS if name in message), "model_type")
