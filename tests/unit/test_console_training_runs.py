"""The bureau console's training runs: what the form's labels and options turn into (or
the refusal, by field and line), and the thread each run trains in: the job id known
at once, a refusal kept for the form, an error kept whole, a cancel that stops the
thread, and the ROC/KS curves of a finished run from the labels the console holds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from creditshare.client import CreditShareClient, TrainedModel, read_labels
from creditshare.console import _training_runs
from creditshare.console._training_runs import Run, Runs, job_config
from creditshare.errors import ImportRejectedError, ProblemError
from creditshare.federated import TrainingConfig, auc, ks
from creditshare.trees import TreeConfig

#: Generous: a thread that should stop does so at its next step (milliseconds here).
WAIT = 30.0


# -- labels ------------------------------------------------------------------------------


def test_labels_are_read_as_bureau_train_reads_them() -> None:
    data = "\ufeffuscc,default\n91a,1\n 91B ,0\n".encode()
    assert read_labels(data, "labels.csv") == {"91A": 1, "91B": 0}


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"uscc,default\nA,1\nB,0\nC,2\n", 4, "default must be 0 or 1, got '2'"),
        (b"uscc,default\nA,1\nB,\n", 3, "default must be 0 or 1"),
        (b"id,label\nA,1\n", 1, "expected columns uscc,default"),
        (b"uscc,default\nA,1\n,0\n", 3, "the row has no uscc"),
        (b"uscc,default\n", 1, "no labelled rows"),
        (b"uscc,default\nA,1\n\xff\xfe,0\n", 3, "not UTF-8 text"),
    ],
)
def test_a_bad_labels_file_is_refused_naming_file_and_line(
    data: bytes, line: int, reason: str
) -> None:
    with pytest.raises(ImportRejectedError) as refused:
        read_labels(data, "mine.csv")
    assert refused.value.file == "mine.csv" and refused.value.line == line
    assert reason in refused.value.reason


# -- options -----------------------------------------------------------------------------


def test_empty_options_take_the_model_types_defaults() -> None:
    config, errors = job_config("logistic", {"max_epochs": "", "l2": " "})
    assert errors == {} and config == TrainingConfig()
    config, errors = job_config("gbdt", {"trees": "3", "max_depth": "2"})
    assert errors == {} and config == TreeConfig(trees=3, max_depth=2)


def test_options_refused_by_field() -> None:
    _, errors = job_config("logistic", {"max_epochs": "0", "batch_size": "many", "seed": "1"})
    assert set(errors) == {"max_epochs", "batch_size"}
    assert "greater than or equal to 1" in errors["max_epochs"]
    # An option of the other model type is refused by name, as the CLI refuses it.
    _, errors = job_config("gbdt", {"max_epochs": "3", "trees": "2"})
    assert errors == {"max_epochs": "not an option of gbdt models"}
    # A check of the whole document lands on the first option it names.
    _, errors = job_config("gbdt", {"early_stopping_rounds": "2", "validation_fraction": "0"})
    assert list(errors) == ["early_stopping_rounds"]
    assert "needs validation rows" in errors["early_stopping_rounds"]
    _, errors = job_config("forest", {})
    assert list(errors) == ["model_type"]


# -- runs --------------------------------------------------------------------------------


class _Client:
    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(tmp_path / "work", lambda: cast(CreditShareClient, _Client()))


Trainer = Callable[..., TrainedModel]


@pytest.fixture
def trainer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Trainer], None]]:
    def use(fake: Trainer) -> None:
        monkeypatch.setattr(_training_runs, "train_model", fake)

    yield use


LABELS = {f"U{k}": k % 3 == 0 for k in range(60)}


def _start(runs: Runs, model_id: str = "m1") -> Run:
    labels = {k: int(v) for k, v in LABELS.items()}
    key, path = runs.save_labels(b"uscc,default\n")
    return runs.start(key, path, labels, ["yrd-tax"], model_id, TrainingConfig(), "")


def _join(run: Run) -> None:
    assert run.thread is not None
    run.thread.join(WAIT)
    assert not run.alive


def test_labels_are_kept_for_the_console_user_only(runs: Runs) -> None:
    key, path = runs.save_labels(b"uscc,default\nA,1\n")
    assert path.read_bytes() == b"uscc,default\nA,1\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert key in path.name


def test_cancel_stops_the_thread_at_its_next_step(
    runs: Runs, trainer: Callable[[Trainer], None]
) -> None:
    steps = threading.Event()

    def endless(*_args: Any, on_progress: Any, on_start: Any, **_kw: Any) -> TrainedModel:
        on_start("job-1")
        while True:  # a job that would never end by itself
            on_progress({"epoch": 0})
            steps.set()
            threading.Event().wait(0.01)

    trainer(endless)
    run = _start(runs)
    assert run.known.wait(WAIT) and run.job_id == "job-1" and run.state == "running"
    assert runs.by_job("job-1") is run
    assert steps.wait(WAIT)
    runs.cancel(run)
    assert not run.alive and run.state == "cancelled" and run.error == ""


def test_a_refusal_before_the_job_exists_is_kept_for_the_form(
    runs: Runs, trainer: Callable[[Trainer], None]
) -> None:
    refusal = ProblemError(409, "Conflict", "model 'm1' exists already", {})

    def refused(*_args: Any, **_kw: Any) -> TrainedModel:
        raise refusal

    trainer(refused)
    run = _start(runs)
    assert run.known.wait(WAIT)
    _join(run)
    assert run.job_id is None and run.refusal is refusal and run.state == "failed"
    assert "exists already" in run.error
    runs.forget(run)
    assert runs.all() == [] and not run.labels_file.exists()


def test_a_failure_mid_job_is_kept_whole(runs: Runs, trainer: Callable[[Trainer], None]) -> None:
    def broken(*_args: Any, on_start: Any, **_kw: Any) -> TrainedModel:
        on_start("job-2")
        raise RuntimeError("a bug, said in full")

    trainer(broken)
    run = _start(runs)
    _join(run)
    assert run.state == "failed" and run.error == "RuntimeError: a bug, said in full"
    assert run.refusal is None and run.job_id == "job-2"


def test_a_finished_run_keeps_roc_and_ks_of_its_test_split(
    runs: Runs, trainer: Callable[[Trainer], None]
) -> None:
    test_ids = tuple(sorted(LABELS))[:40]
    rng = np.random.default_rng(3)
    scores = tuple(float(rng.normal() + LABELS[i]) for i in test_ids)
    y = np.array([int(LABELS[i]) for i in test_ids])

    def done(*_args: Any, on_start: Any, **_kw: Any) -> TrainedModel:
        on_start("job-3")
        s = np.array(scores)
        return TrainedModel(
            "job-3", "m3", 60, auc(y, s), ks(y, s), [], 0.0, test_ids, test_scores=scores
        )

    trainer(done)
    run = _start(runs, "m3")
    _join(run)
    assert run.state == "finished" and run.curves is not None
    curves = run.curves
    assert curves.test_rows == 40 and curves.aligned_rows == 60
    xs, ys = np.array(curves.roc).T
    assert float(np.trapezoid(ys, xs)) == pytest.approx(curves.test_auc)
    assert curves.ks is not None and curves.ks.ks == pytest.approx(curves.test_ks)


def test_a_call_refused_while_the_cancel_is_asked_ends_the_run_as_cancelled(
    runs: Runs, trainer: Callable[[Trainer], None]
) -> None:
    asked = threading.Event()

    def refused_once_cancelled(*_args: Any, on_start: Any, **_kw: Any) -> TrainedModel:
        on_start("job-4")
        assert asked.wait(WAIT)
        raise ProblemError(409, "Conflict", "training job job-4 is cancelled", {})

    trainer(refused_once_cancelled)
    run = _start(runs)
    assert run.known.wait(WAIT)
    with runs.cancelling(run):  # the coordinator answers the thread first, then us
        asked.set()
        _join(run)
    assert run.state == "cancelled"


def test_a_refused_cancel_leaves_the_run_as_it_was(runs: Runs) -> None:
    key, path = runs.save_labels(b"")
    run = Run(key, "m", "logistic", [], path, datetime.now(UTC))
    with pytest.raises(ProblemError), runs.cancelling(run):
        raise ProblemError(422, "Invalid input", "reason too long", {})
    assert not run.cancel_asked.is_set() and not run.stop.is_set()
