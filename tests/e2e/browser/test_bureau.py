"""A credit bureau's console against a real federation: it starts a training job through
the page and watches its curve grow, sees the published model with its AUC and KS (and
the ROC and KS curves it drew from the labels it holds), cancels a second job through
the page, and every form shows the server's refusal next to its field.

Real node processes, a real coordinator, 2048-bit Paillier, a real ``creditshare
console`` process training in its own thread; the browser reaches nothing but the
console. Between the console and the coordinator sits a gate (``Gate``) that holds each
epoch's curve point until the test lets it through, so the page's curve is seen growing
point by point however fast or slow the machine trains. Jobs are small (few epochs, a
few hundred rows) so the test is quick; nothing asserts on time: every wait polls for a
state with a generous deadline.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from creditshare.client import CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation

from ..._serving import serve_in_thread
from ..conftest import Trust, bureau_labels, synthetic_federation
from .conftest import Consoles, check_page, open_console, participant_console_settings

pytestmark = pytest.mark.e2e

DEPARTMENTS = ("tax", "market")
NODES = [f"yrd-{d}" for d in DEPARTMENTS]
#: A job ends (finishes, or stops after a cancel) well within this on a busy machine.
JOB_TIMEOUT = 900.0
JOB_PAGE = re.compile(r"/bureau/jobs/[0-9a-f]{32}$")
EPOCHS = 5


@pytest.fixture(scope="module")
def bureau_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with synthetic_federation(
        tmp_path_factory.mktemp("bureau-console"), 300, DEPARTMENTS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def bureau_trust(bureau_federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    trust = Trust(bureau_federation, bank_key, "console-bureau-bank")
    yield trust
    trust.close()


class Gate:
    """Between the console and the coordinator: holds each report of a curve point
    (a progress POST with a validation loss) until the test lets one through, so the
    test sees the page's curve grow point by point however fast the machine trains.
    A cancel the coordinator accepted opens the gate (a held report then meets the
    cancelled job), as does ``open()``; ``close()`` holds reports again."""

    def __init__(self) -> None:
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()
        self._lock = threading.Lock()
        self.held = 0

    def wait(self) -> None:
        with self._lock:
            self.held += 1
        try:
            while not self._open.is_set():
                if self._permits.acquire(timeout=0.1):
                    return
        finally:
            with self._lock:
                self.held -= 1

    def release(self) -> None:
        self._permits.release()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


def _gate_app(target: str, gate: Gate) -> FastAPI:
    app = FastAPI()
    upstream = httpx.Client(base_url=target, timeout=300)
    dropped = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def forward(request: Request, path: str) -> Response:
        body = await request.body()
        point = path.endswith("/progress") and request.method == "POST"
        if point and json.loads(body or b"{}").get("validation_loss") is not None:
            await run_in_threadpool(gate.wait)
        answer = await run_in_threadpool(
            upstream.request,
            request.method,
            "/" + path,
            params=list(request.query_params.multi_items()),
            content=body,
            headers={k: v for k, v in request.headers.items() if k.lower() not in dropped},
        )
        if request.method == "POST" and path.endswith("/cancel") and answer.is_success:
            gate.open()
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    return app


@pytest.fixture(scope="module")
def gated(bureau_trust: Trust) -> Iterator[tuple[Gate, str]]:
    """A gate in front of the coordinator, and its URL (the console's coordinator)."""
    held = Gate()
    with serve_in_thread(_gate_app(bureau_trust.url, held)) as url:
        yield held, url
        held.open()


@pytest.fixture(scope="module")
def bureau_settings(
    bureau_trust: Trust, gated: tuple[Gate, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("console-bureau")
    settings = participant_console_settings(
        bureau_trust, folder, "console-bureau", "bureau", "Console Bureau"
    )
    return {**settings, "coordinator_url": gated[1]}


def _labels_file(path: Path, labels: dict[str, int], bad_line: int | None = None) -> Path:
    """The labels as a CSV; with ``bad_line``, that line's default is 2."""
    rows = [["uscc", "default"], *([uscc, str(y)] for uscc, y in labels.items())]
    if bad_line is not None:
        rows[bad_line - 1][1] = "2"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _fill_job_form(
    page: Any, model_id: str, labels: Path, options: dict[str, str], model_type: str = "logistic"
) -> None:
    page.fill("#f-model_id", model_id)
    page.select_option("#f-nodes", NODES)
    page.set_input_files("#f-labels", str(labels))
    page.select_option("#f-model_type", model_type)
    for name, value in options.items():
        page.fill(f"#f-{name}", value)


def _status(page: Any) -> str:
    return str(page.locator("#job-status").get_attribute("data-status"))


def _wait(page: Any, condition: Any, what: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        page.wait_for_timeout(300)


def test_a_bureau_trains_watches_its_curve_grow_sees_the_model_and_cancels_a_job(
    consoles: Consoles,
    browser: object,
    bureau_federation: Federation,
    bureau_trust: Trust,
    bureau_settings: dict[str, Any],
    gated: tuple[Gate, str],
    tmp_path: Path,
) -> None:
    console = consoles.start("bureau", **bureau_settings)
    gate = gated[0]
    labels = bureau_labels(bureau_federation)
    good = _labels_file(tmp_path / "labels.csv", labels)
    bad = _labels_file(tmp_path / "bad-labels.csv", labels, bad_line=4)
    small = {
        "max_epochs": str(EPOCHS),
        "early_stopping_rounds": str(EPOCHS),
        "batch_size": "64",
        "learning_rate": "0.5",
    }
    with open_console(browser, console) as page:
        page.goto(console.url + "/")
        assert page.url.endswith("/bureau/jobs")
        check_page(page, "bureau-jobs-empty")

        # The form refuses a labels file with a bad row, naming its line by the file field.
        page.goto(console.url + "/bureau/jobs/new")
        check_page(page, "bureau-new-job")
        _fill_job_form(page, "console-model-v1", bad, small)
        page.click("#new-job button[type=submit]")
        error = page.locator("#e-labels")
        error.wait_for()
        assert "line 4" in error.inner_text() and "default must be 0 or 1" in error.inner_text()
        assert page.locator("#f-labels").get_attribute("aria-describedby").endswith("e-labels")
        assert page.input_value("#f-model_id") == "console-model-v1"  # nothing typed is lost
        check_page(page, "bureau-new-job-bad-labels")

        # Started with good labels: the job page, its id known at once.
        _fill_job_form(page, "console-model-v1", good, small)
        page.click("#new-job button[type=submit]")
        page.wait_for_url(JOB_PAGE)
        job_id = page.url.rsplit("/", 1)[1]
        assert page.locator("#job-id").inner_text() == job_id

        # The curve grows on the page, poll by poll, one epoch at a time: each epoch's
        # point reaches the coordinator only when the gate lets it through, and the page
        # must show it before the next one goes.
        def points() -> int:
            return int(page.locator("#loss-chart").get_attribute("data-points") or -1)

        for epoch in range(1, EPOCHS + 1):
            _wait(page, lambda: gate.held == 1, f"epoch {epoch}'s point to be reported")
            _wait(page, lambda: _status(page) == "training", "the page to show training")
            assert points() == epoch - 1
            gate.release()
            _wait(page, lambda e=epoch: points() == e, f"the page to draw point {epoch}")
            assert page.locator("#auc-chart circle.point").count() == epoch
        _wait(page, lambda: _status(page) != "training", "the first job to end")
        assert _status(page) == "finished", page.locator("#job-error").all_inner_texts()
        assert page.locator("#loss-chart circle.point").count() == EPOCHS

        # The published model, as the SDK lists it, with the ROC and KS curves drawn here
        # once this console's thread is done (the page stops polling then).
        page.wait_for_selector(
            "#job-live:not([hx-trigger])", state="attached", timeout=JOB_TIMEOUT * 1000
        )
        with CreditShareClient(bureau_trust.url, api_key=bureau_settings["api_key"]) as sdk:
            model = next(m for m in sdk.models() if m["id"] == "console-model-v1")
            job = sdk.training_job(job_id)
        assert job["status"] == "finished"
        assert page.locator("#test-auc").inner_text() == f"{model['metrics']['test_auc']:.4f}"
        assert page.locator("#test-ks").inner_text() == f"{model['metrics']['test_ks']:.4f}"
        assert page.locator("#roc-chart path.line").count() == 1
        ks_label = page.locator("#ks-chart .mark-label").text_content()
        assert ks_label == f"KS {model['metrics']['test_ks']:.4f}"
        # The ROC curve the page drew (its data table) encloses the published AUC: the
        # console paired each held-out enterprise's label with the score banks get.
        roc = [
            [float(cell) for cell in row.locator("td").all_text_contents()]
            for row in page.locator("#roc-chart tbody tr").all()
        ]
        area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(roc))
        assert area == pytest.approx(model["metrics"]["test_auc"], abs=1e-3)
        assert page.locator("#cancel-form").count() == 0  # nothing left to cancel
        check_page(page, "bureau-job-finished")

        page.goto(console.url + "/bureau/models")
        row = page.locator('tr[data-model="console-model-v1"]')
        assert row.locator("td.auc").inner_text() == f"{model['metrics']['test_auc']:.4f}"
        assert row.locator("td.ks").inner_text() == f"{model['metrics']['test_ks']:.4f}"
        check_page(page, "bureau-models")

        # The coordinator refuses a model id that exists: said by the model id field.
        page.goto(console.url + "/bureau/jobs/new")
        _fill_job_form(page, "console-model-v1", good, small)
        page.click("#new-job button[type=submit]")
        error = page.locator("#e-model_id")
        error.wait_for()
        assert "exists already" in error.inner_text()
        check_page(page, "bureau-new-job-model-exists")

        # A second, longer job, cancelled through its page.
        _fill_job_form(
            page,
            "console-model-v2",
            good,
            {**small, "max_epochs": "200", "early_stopping_rounds": "200"},
        )
        page.click("#new-job button[type=submit]")
        page.wait_for_url(JOB_PAGE)
        second = page.url.rsplit("/", 1)[1]
        assert second != job_id
        assert _status(page) in ("aligning", "training")
        # A reason longer than the coordinator keeps: refused next to the reason field,
        # and the job goes on.
        page.fill("#f-reason", "x" * 501)
        page.click("#cancel-form button[type=submit]")
        error = page.locator("#e-reason")
        error.wait_for()
        assert "500" in error.inner_text()
        check_page(page, "bureau-cancel-refused")
        page.fill("#f-reason", "the browser test cancels it")
        page.click("#cancel-form button[type=submit]")
        _wait(
            page,
            lambda: (
                _status(page) == "cancelled"
                and page.locator("#run-state").get_attribute("data-alive") == "no"
            ),
            "the second job to be cancelled and its training thread to stop",
        )
        assert page.locator("#run-state").get_attribute("data-state") == "cancelled"
        with CreditShareClient(bureau_trust.url, api_key=bureau_settings["api_key"]) as sdk:
            cancelled = sdk.training_job(second)
        assert cancelled["status"] == "cancelled"
        assert cancelled["error"] == "the browser test cancels it"
        page.wait_for_selector(
            "#job-live:not([hx-trigger])", state="attached", timeout=JOB_TIMEOUT * 1000
        )
        assert page.locator("#cancel-form").count() == 0
        check_page(page, "bureau-job-cancelled")

        page.goto(console.url + "/bureau/jobs")
        statuses = {
            page.locator(f'tr[data-job="{j}"] td.status').inner_text() for j in (job_id, second)
        }
        assert statuses == {"finished", "cancelled"}
        check_page(page, "bureau-jobs")

        # A job the coordinator does not know: a 404 page saying its answer (fetched,
        # not shown: Chromium logs a shown 404 as a page error). A path that is no job
        # id never reaches the coordinator.
        missing = page.request.get(f"{console.url}/bureau/jobs/{'0' * 32}")
        assert missing.status == 404 and "0" * 32 in missing.text()
        assert page.request.get(f"{console.url}/bureau/jobs/a.b").status == 422

        # The same job in Chinese (the console's default language).
        page.goto(f"{console.url}/lang/zh?back=/bureau/jobs/{job_id}")
        assert page.locator("#job-status").inner_text() == "已完成"
        check_page(page, "bureau-job-finished-zh")
        page.goto(f"{console.url}/lang/en?back=/bureau/jobs")

        # Gradient-boosted trees, through the same form: a curve per tree, ROC and KS.
        page.goto(console.url + "/bureau/jobs/new")
        trees = {"trees": "3", "max_depth": "2", "max_bins": "8", "validation_fraction": "0.2"}
        gate.open()
        _fill_job_form(page, "console-trees-v1", good, trees, model_type="gbdt")
        page.click("#new-job button[type=submit]")
        page.wait_for_url(JOB_PAGE)
        _wait(page, lambda: _status(page) not in ("aligning", "training"), "the tree job")
        assert _status(page) == "finished", page.locator("#job-error").all_inner_texts()
        page.wait_for_selector(
            "#job-live:not([hx-trigger])", state="attached", timeout=JOB_TIMEOUT * 1000
        )
        assert page.locator("#loss-chart circle.point").count() == 3
        assert page.locator("#loss-chart .axis-label").first.text_content() == "Tree"
        assert page.locator("#roc-chart path.line").count() == 1
        # Tree margins tie: the KS drawn is still the one published.
        with CreditShareClient(bureau_trust.url, api_key=bureau_settings["api_key"]) as sdk:
            forest = next(m for m in sdk.models() if m["id"] == "console-trees-v1")
        assert forest["model_type"] == "gbdt"
        ks_label = page.locator("#ks-chart .mark-label").text_content()
        assert ks_label == f"KS {forest['metrics']['test_ks']:.4f}"
        check_page(page, "bureau-job-trees")
        gate.close()

        # A job still training when the console stops is cancelled by it, not left for
        # the coordinator's idle timeout.
        page.goto(console.url + "/bureau/jobs/new")
        _fill_job_form(
            page,
            "console-model-v3",
            good,
            {**small, "max_epochs": "200", "early_stopping_rounds": "200"},
        )
        page.click("#new-job button[type=submit]")
        page.wait_for_url(JOB_PAGE)
        third = page.url.rsplit("/", 1)[1]
    console.stop()
    with CreditShareClient(bureau_trust.url, api_key=bureau_settings["api_key"]) as sdk:
        left = sdk.training_job(third)
    assert left["status"] == "cancelled" and left["error"] == "the console stopped"

    # The labels stayed in the console's work folder, readable by its user only: one
    # file per job started (the refused start kept none).
    kept = sorted((console.work_dir / "labels").iterdir())
    assert len(kept) == 4
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in kept)
