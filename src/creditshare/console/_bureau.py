"""The credit bureau's pages: training jobs (start, follow, cancel) and published models.

A job started here is trained by this console's process (``_training_runs``): the
labels and the Paillier key stay on the bureau's machine, the page follows the job by
polling a fragment (``/bureau/jobs/{id}/progress``) that redraws its status, progress
and validation curves until it ends, and a finished job shows its model's test metrics
with the ROC and KS curves the console computed from the labels it holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from creditshare.client import CreditShareClient
from creditshare.console._charts import Chart, Series, line_chart
from creditshare.console._forms import FormErrors, form_errors
from creditshare.console._render import language_of, page
from creditshare.console._state import ConsoleState, console_state
from creditshare.console._training_runs import (
    ALL_OPTIONS,
    OPTIONS,
    Run,
    Runs,
    job_config,
    read_labels,
)
from creditshare.errors import CreditShareError, ImportRejectedError, ProblemError
from creditshare.federated import TrainingConfig
from creditshare.trees import TreeConfig

__all__ = ["NAVIGATION", "router"]

#: The role's menu: (path, message key), in order; the first is its landing page.
NAVIGATION: list[tuple[str, str]] = [
    ("/bureau/jobs", "bureau.nav_jobs"),
    ("/bureau/jobs/new", "bureau.nav_new_job"),
    ("/bureau/models", "bureau.nav_models"),
]

#: Job states in which the job may still move (the coordinator's, then this console's).
ACTIVE = ("aligning", "training", "running", "starting")
#: A job id as the coordinator names jobs: anything else never reaches its URL path.
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
#: How long the start form waits for the coordinator to accept the job.
START_WAIT_SECONDS = 120.0
#: The start form's fields, for placing the coordinator's refusals.
FORM_FIELDS = ["model_id", "description", "nodes", "model_type", "labels", *OPTIONS["gbdt"]]
FORM_FIELDS += [name for name in OPTIONS["logistic"] if name not in FORM_FIELDS]


def _runs(state: ConsoleState) -> Runs:
    runs: Runs | None = state.extras.get("runs")
    if runs is None:
        settings, sdk = state.settings, state.sdk

        def connect() -> CreditShareClient:
            return CreditShareClient(
                settings.coordinator_url or "",
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                private_key=sdk.private_key,
                identity=sdk.identity,
            )

        runs = state.extras["runs"] = Runs(settings.work_dir, connect)
    return runs


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """At shutdown, cancel the jobs this console still drives, so none waits for the
    coordinator's idle timeout, and stop their threads (daemons: a console stopping
    must not wait for a job to finish)."""
    yield
    runs: Runs | None = app.state.console.extras.get("runs")
    if runs is not None and any(run.alive for run in runs.all()):
        await run_in_threadpool(_stop_runs, runs)


def _stop_runs(runs: Runs) -> None:
    with runs.connect() as client:

        def cancel(job_id: str) -> object:
            return client.cancel_training_job(job_id, "the console stopped")

        runs.stop_all(cancel)


router = APIRouter(lifespan=_lifespan)


# -- the jobs list ---------------------------------------------------------------------


@router.get("/bureau/jobs", response_class=HTMLResponse)
def jobs(request: Request) -> Response:
    """The bureau's jobs as the coordinator lists them (whoever started them: this
    console or the CLI), newest first; a run of this console still starting first."""
    state = console_state(request)
    runs = _runs(state)
    problem = ""
    listed: list[dict[str, Any]] = []
    try:
        listed = state.sdk.training_jobs()
    except CreditShareError as exc:
        problem = str(exc)
    known = {job["id"] for job in listed}
    rows = [_row(run, {}) for run in runs.all() if run.job_id not in known]
    rows += [_row(runs.by_job(job["id"]), job) for job in listed]
    return page(request, "bureau/jobs.html", jobs=rows, problem=problem)


def _row(run: Run | None, job: dict[str, Any]) -> dict[str, Any]:
    """One line of the jobs table: the coordinator's view, else the console's."""
    status = job.get("status") or (run.state if run else "")
    return {
        "id": job.get("id") or (run.job_id if run else None),
        "model_id": job.get("model_id") or (run.model_id if run else ""),
        "model_type": _model_type(job) if job else (run.model_type if run else ""),
        "status": status,
        "progress": _progress(job) if job else None,
        "nodes": ", ".join(job.get("nodes") or (run.nodes if run else [])),
        "error": job.get("error") or (run.error if run else ""),
        "created_at": _moment(job.get("created_at")),
        "here": run is not None,
    }


def _moment(value: object) -> str:
    """An ISO time as the tables show it: to the second, in UTC as sent."""
    text = str(value or "")
    return text[:19].replace("T", " ") + (" UTC" if text else "")


def _model_type(job: dict[str, Any]) -> str:
    if job.get("model_type") in ("logistic", "gbdt"):
        return str(job["model_type"])
    return "gbdt" if (job.get("config") or {}).get("model_type") == "gbdt" else "logistic"


def _progress(job: dict[str, Any]) -> dict[str, Any]:
    """Epochs (trees) done of the most, and the batch within the epoch."""
    config = job.get("config") or {}
    gbdt = _model_type(job) == "gbdt"
    total = int(config.get("trees", 100) if gbdt else config.get("max_epochs", 10))
    done = job.get("progress") or {}
    batches = int(done.get("batches") or 0)
    if "epoch" not in done:
        completed = 0.0
    else:
        completed = int(done["epoch"]) + (int(done.get("batch") or 0) / batches if batches else 0)
    if job.get("status") == "finished":  # it may have stopped early: done is all
        total = max(1, round(completed))
        completed = float(total)
    return {
        "done": round(min(completed, total), 2),
        "done_text": f"{round(min(completed, total), 2):g}",
        "total": total,
        "epoch": min(int(completed) + 1, total),
        "batch": int(done.get("batch") or 0),
        "batches": batches,
        "gbdt": gbdt,
    }


# -- starting a job --------------------------------------------------------------------


@router.get("/bureau/jobs/new", response_class=HTMLResponse)
def new_job(request: Request) -> Response:
    return _form(request, {"model_type": "logistic"}, [], FormErrors())


def _form(
    request: Request,
    values: dict[str, str],
    chosen: list[str],
    errors: FormErrors,
    status_code: int = 200,
) -> HTMLResponse:
    state = console_state(request)
    nodes: list[dict[str, Any]] = []
    try:
        nodes = state.sdk.nodes()
    except CreditShareError as exc:
        errors.add("nodes", str(exc))
    node_options = [(n["id"], f"{n['id']} ({n['chain']}, {n['department']})") for n in nodes]
    return page(
        request,
        "bureau/new_job.html",
        status_code=status_code,
        errors=errors,
        values=values,
        chosen=chosen,
        node_options=node_options,
        logistic_options=[n for n in OPTIONS["logistic"] if n not in OPTIONS["gbdt"]],
        gbdt_options=[n for n in OPTIONS["gbdt"] if n not in OPTIONS["logistic"]],
        shared_options=[n for n in OPTIONS["gbdt"] if n in OPTIONS["logistic"]],
        defaults={"logistic": TrainingConfig().model_dump(), "gbdt": TreeConfig().model_dump()},
    )


@router.post("/bureau/jobs/new", response_class=HTMLResponse)
async def start_job(request: Request) -> Response:
    """Check the form, start the run, and go to its job page once the coordinator
    accepted the job; a refusal is shown next to the field it concerns."""
    form = await request.form()
    upload = form.get("labels")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    name = (upload.filename or "") if isinstance(upload, UploadFile) else ""
    if data and not name:
        name = "labels.csv"
    return await run_in_threadpool(_start, request, form, data, name)


def _start(request: Request, form: FormData, data: bytes, name: str) -> Response:
    state = console_state(request)
    t = _words(request)
    values = {k: str(v) for k, v in form.items() if isinstance(v, str) and k != "nodes"}
    chosen = [str(v) for v in form.getlist("nodes")]
    errors = FormErrors()
    model_id = values.get("model_id", "").strip()
    if not model_id:
        errors.add("model_id", t("bureau.error_model_id_missing"))
    if not chosen:
        errors.add("nodes", t("bureau.error_nodes_missing"))
    model_type = values.get("model_type", "logistic")
    config, problems = job_config(model_type, {k: values.get(k, "") for k in ALL_OPTIONS})
    for field, message in problems.items():
        errors.add(field, message)
    labels: dict[str, int] = {}
    if not name:  # no file chosen (the browser sends an empty, nameless part)
        errors.add("labels", t("bureau.error_labels_missing"))
    else:
        try:
            labels = read_labels(data, name)
        except ImportRejectedError as exc:
            errors.add("labels", str(exc))
    if errors or config is None:
        return _form(request, values, chosen, errors, status_code=422)
    runs = _runs(state)
    key, path = runs.save_labels(data)
    run = runs.start(
        key, path, labels, chosen, model_id, config, values.get("description", "").strip()
    )
    run.known.wait(START_WAIT_SECONDS)
    if run.job_id is not None:
        response = Response(status_code=204)
        response.headers["HX-Redirect"] = f"/bureau/jobs/{run.job_id}"
        return response
    if run.refusal is not None or run.error:
        runs.forget(run)
        refusal = run.refusal
        errors = (
            _refusal_errors(refusal, model_id)
            if refusal is not None
            else FormErrors(form=[run.error])
        )
        return _form(request, values, chosen, errors, status_code=422)
    response = Response(status_code=204)  # still starting: the list shows it
    response.headers["HX-Redirect"] = "/bureau/jobs"
    return response


def _refusal_errors(exc: CreditShareError, model_id: str) -> FormErrors:
    """The coordinator's refusal by field; a conflict naming the model id (it exists,
    or a live job reserves it) concerns the model id field."""
    if isinstance(exc, ProblemError) and exc.status == 409 and repr(model_id) in exc.detail:
        errors = FormErrors()
        errors.add("model_id", exc.detail)
        return errors
    return form_errors(exc, FORM_FIELDS)


# -- one job ---------------------------------------------------------------------------


def _job_context(request: Request, job_id: str) -> dict[str, Any]:
    state = console_state(request)
    run = _runs(state).by_job(job_id)
    job = state.sdk.training_job(job_id)
    status = job["status"]
    model: dict[str, Any] | None = None
    if status == "finished":
        model = next((m for m in state.sdk.models() if m["id"] == job["model_id"]), None)
    live = status in ACTIVE or (run is not None and run.alive)
    return {
        "job": job,
        "run": run,
        "row": _row(run, job),
        "live": live,
        "model": model,
        "charts": _charts(request, job, run),
    }


@router.get("/bureau/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: JobId) -> Response:
    try:
        context = _job_context(request, job_id)
    except CreditShareError as exc:
        return page(request, "bureau/missing.html", status_code=404, problem=str(exc))
    return page(request, "bureau/job.html", **context)


@router.get("/bureau/jobs/{job_id}/progress", response_class=HTMLResponse)
def job_progress(request: Request, job_id: JobId) -> Response:
    """The live part of the job page (htmx polls it while the job may move)."""
    try:
        context = _job_context(request, job_id)
    except CreditShareError as exc:
        return page(request, "bureau/missing.html", status_code=404, problem=str(exc))
    return page(request, "bureau/_live.html", fragment=True, **context)


@router.post("/bureau/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_job(request: Request, job_id: JobId, reason: Annotated[str, Form()] = "") -> Response:
    """Cancel at the coordinator (every node drops the job), then stop this console's
    thread driving it; a refusal goes next to the reason field."""
    state = console_state(request)
    errors = FormErrors()
    runs = _runs(state)
    run = runs.by_job(job_id)
    try:
        with runs.cancelling(run):
            state.sdk.cancel_training_job(job_id, reason)
    except CreditShareError as exc:
        errors = form_errors(exc, ["reason"])
    else:
        if run is not None:
            runs.cancel(run)
    try:
        context = _job_context(request, job_id)
    except CreditShareError as exc:
        return page(request, "bureau/missing.html", status_code=404, problem=str(exc))
    return page(
        request,
        "bureau/job.html",
        status_code=422 if errors else 200,
        errors=errors,
        reason=reason if errors else "",
        **context,
    )


def _words(request: Request) -> Any:
    state = console_state(request)
    language = language_of(request)

    def t(key: str, **values: Any) -> str:
        return state.catalog.text(language, key, **values)

    return t


def _charts(request: Request, job: dict[str, Any], run: Run | None) -> dict[str, Chart]:
    """The job's validation curves; the ROC and KS charts of a run finished here."""
    t = _words(request)
    gbdt = _model_type(job) == "gbdt"
    x_label = t("bureau.tree") if gbdt else t("bureau.epoch")
    history = job.get("history") or []
    loss = [
        (int(p["epoch"]) + 1, float(p["validation_loss"]))
        for p in history
        if p.get("validation_loss") is not None
    ]
    aucs = [
        (int(p["epoch"]) + 1, float(p["validation_auc"]))
        for p in history
        if p.get("validation_auc") is not None
    ]
    charts = {
        "loss": line_chart(
            "loss-chart",
            t("bureau.loss_chart_title"),
            t("bureau.loss_chart_desc", count=len(loss), unit=x_label.lower()),
            x_label,
            t("bureau.validation_loss"),
            [Series(t("bureau.validation_loss"), loss)],
            integer_x=True,
        ),
        "auc": line_chart(
            "auc-chart",
            t("bureau.auc_chart_title"),
            t("bureau.auc_chart_desc", count=len(aucs), unit=x_label.lower()),
            x_label,
            t("bureau.validation_auc"),
            [Series(t("bureau.validation_auc"), aucs)],
            integer_x=True,
        ),
    }
    curves = run.curves if run is not None else None
    if curves is not None and curves.roc:
        charts["roc"] = line_chart(
            "roc-chart",
            t("bureau.roc_chart_title"),
            t("bureau.roc_chart_desc", auc=f"{curves.test_auc:.4f}", rows=curves.test_rows),
            t("bureau.false_positive_rate"),
            t("bureau.true_positive_rate"),
            [Series(t("bureau.roc_curve"), curves.roc)],
            x_domain=(0.0, 1.0),
            y_domain=(0.0, 1.0),
            markers=False,
            diagonal=True,
        )
    if curves is not None and curves.ks is not None:
        # The figure is the published KS (federated.ks over the same bank-path scores);
        # the curve only says where the widest gap is drawn.
        ks, published = curves.ks, curves.test_ks
        chart = line_chart(
            "ks-chart",
            t("bureau.ks_chart_title"),
            t("bureau.ks_chart_desc", ks=f"{published:.4f}", at=f"{ks.at:.2%}"),
            t("bureau.population_share"),
            t("bureau.cumulative_share"),
            [
                Series(t("bureau.defaults"), ks.defaults),
                Series(t("bureau.non_defaults"), ks.others),
            ],
            x_domain=(0.0, 1.0),
            y_domain=(0.0, 1.0),
            markers=False,
        )
        low = dict(ks.others).get(ks.at, 0.0)
        high = dict(ks.defaults).get(ks.at, 0.0)
        charts["ks"] = chart.marked(ks.at, low, high, f"KS {published:.4f}")
    return charts


# -- published models ------------------------------------------------------------------


@router.get("/bureau/models", response_class=HTMLResponse)
def models(request: Request) -> Response:
    state = console_state(request)
    problem = ""
    listed: list[dict[str, Any]] = []
    try:
        listed = state.sdk.models()
    except CreditShareError as exc:
        problem = str(exc)
    return page(request, "bureau/models.html", models=listed, problem=problem)
