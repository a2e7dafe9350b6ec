"""RFC 9457 problem responses: the one place where errors become HTTP statuses."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException

from creditshare._logging import REQUEST_ID_HEADER
from creditshare.errors import (
    AuthenticationError,
    CapacityError,
    ConflictError,
    ConsentRefusedError,
    CreditShareError,
    GoneError,
    InvalidInputError,
    InvalidSignatureError,
    KeyTooSmallError,
    LedgerIntegrityError,
    NodeFailedError,
    NoNodeAnsweredError,
    NotFoundError,
    PermissionDeniedError,
    PrivacyBudgetExceededError,
    RateLimitedError,
    RevocationStaleError,
)
from creditshare.identity import InvalidUsccError

__all__ = ["PROBLEM_JSON", "install_problem_handlers", "problem", "problem_for", "status_of"]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("creditshare.coordinator")


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _for_error(exc: CreditShareError) -> JSONResponse:
    # A request field the error concerns (``CreditShareError.at``) goes into every
    # problem body, so a form shows the refusal next to that field.
    named = {"field": exc.field} if exc.field else {}

    def answer(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
        return problem(status, title, detail, **{**named, **extra})

    if isinstance(exc, InvalidUsccError):
        return answer(422, "Invalid USCC", str(exc), field="uscc", position=exc.position)
    if isinstance(exc, KeyTooSmallError):
        return answer(
            422,
            "Key too small",
            str(exc),
            field="public_key",
            bits=exc.bits,
            minimum_bits=exc.minimum,
        )
    if isinstance(exc, InvalidInputError):
        return answer(422, "Invalid input", str(exc))
    if isinstance(exc, InvalidSignatureError):
        return answer(422, "Invalid signature", str(exc))
    if isinstance(exc, GoneError):
        return answer(410, "Gone", str(exc))
    if isinstance(exc, NotFoundError):
        return answer(404, "Not found", str(exc))
    if isinstance(exc, AuthenticationError):
        response = answer(401, "Unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, ConsentRefusedError):
        return answer(403, "Consent refused", str(exc), recorded=True)
    if isinstance(exc, PrivacyBudgetExceededError):
        return answer(403, "Privacy budget exhausted", str(exc), recorded=True)
    if isinstance(exc, PermissionDeniedError):
        return answer(403, "Forbidden", str(exc))
    if isinstance(exc, ConflictError):
        return answer(409, "Conflict", str(exc))
    if isinstance(exc, RateLimitedError):
        response = answer(429, "Too many requests", str(exc), retry_after=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, NodeFailedError):
        return answer(502, "Node failed", str(exc), node=exc.node)
    if isinstance(exc, CapacityError):
        response = answer(503, "Busy", str(exc), retry_after=60)
        response.headers["Retry-After"] = "60"
        return response
    if isinstance(exc, NoNodeAnsweredError):
        return answer(503, "No node answered", str(exc), failed=exc.failures)
    if isinstance(exc, RevocationStaleError):
        return answer(503, "Revocation data too old", str(exc))
    if isinstance(exc, LedgerIntegrityError):
        return answer(503, "Ledger refuses to sign", str(exc))
    return answer(500, "Internal error", "the coordinator could not complete the request")


def problem_for(exc: CreditShareError) -> JSONResponse:
    """The problem response an error is answered with (for middleware outside routing)."""
    return _for_error(exc)


def status_of(exc: CreditShareError) -> int:
    """The HTTP status an error is answered with."""
    return _for_error(exc).status_code


#: The tags of the request bodies' tagged unions (a training job's ``config``: the logistic
#: or the gradient-boosted-tree document, ``_training_bodies.ConfigIn``). Pydantic puts the
#: member's tag into an error's location; the caller sent no field of that name, so a
#: location names the fields it did send (``body.config.mask_bits``, not
#: ``body.config.logistic.mask_bits``).
_UNION_TAGS = frozenset({"logistic", "gbdt"})


def _location(loc: Any) -> str:
    return ".".join(str(p) for p in loc if p not in _UNION_TAGS)


def install_problem_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CreditShareError)
        return _for_error(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        malformed = await _malformed_body(request, exc)
        if malformed is not None:
            return malformed
        errors = [
            {"location": _location(err.get("loc", ())), "message": err.get("msg")}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own errors (404 no such route, 405 method, 400 body not UTF-8):
        # the same problem+json as every other error, the Allow header kept.
        assert isinstance(exc, HTTPException)
        return _for_http(exc)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside the request-context middleware: take the request id from the state.
        request_id = getattr(request.state, "request_id", None)
        # The route template, not the path: paths can hold an enterprise's USCC.
        route = getattr(request.scope.get("route"), "path", "(no route)")
        log.exception(
            "unhandled error on %s %s",
            request.method,
            route,
            extra={"request_id": request_id},
        )
        response = problem(500, "Internal error", "the coordinator could not complete the request")
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    async def on_database(request: Request, exc: Exception) -> JSONResponse:
        # A backstop: inputs are bounded before they reach the database, and known races
        # (duplicate ids) are turned into 409s where they happen. A value the database
        # still refuses is the caller's (422: out of range) or a clash with what is stored
        # (409), never a 500. Only the class is logged; the parameters are hidden anyway.
        route = getattr(request.scope.get("route"), "path", "(no route)")
        if isinstance(exc, IntegrityError):
            log.warning("database refused a write on %s %s as a conflict", request.method, route)
            return problem(409, "Conflict", "the request conflicts with what is stored")
        log.warning("database refused a value on %s %s", request.method, route)
        return problem(422, "Invalid input", "a value is outside what can be stored")

    app.add_exception_handler(CreditShareError, on_error)
    app.add_exception_handler(IntegrityError, on_database)
    app.add_exception_handler(DataError, on_database)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    # From the headers: the body stream was consumed by the route's parser.
    length = request.headers.get("content-length", "0").strip()
    return (length.isdigit() and int(length) > 0) or "transfer-encoding" in request.headers


async def _malformed_body(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """400 for a body that is not JSON at all (a syntax error, or another media type
    where JSON is expected), saying where it broke; None for a JSON body that is
    merely invalid (422)."""
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            where = "" if position is None else f" at byte {position}"
            detail = f"the body is not valid JSON: {reason}{where}"
            return problem(
                400,
                "Malformed JSON",
                detail,
                position=position,
                errors=[{"location": "body", "message": detail}],
            )
    content_type = request.headers.get("content-type")
    at_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in exc.errors())
    if at_body and not _is_json(content_type) and _has_body(request):
        detail = f"the body must be JSON (Content-Type: application/json), not {content_type}"
        return problem(
            400, "Body is not JSON", detail, errors=[{"location": "body", "message": detail}]
        )
    return None


def _for_http(exc: HTTPException) -> JSONResponse:
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    extra: dict[str, Any] = {}
    cause = exc.__cause__
    if status == 400 and isinstance(cause, UnicodeDecodeError):
        title = "Malformed JSON"
        detail = f"the body is not UTF-8 JSON: {cause.reason} at byte {cause.start}"
        extra = {"position": cause.start, "errors": [{"location": "body", "message": detail}]}
    response = problem(status, title, detail, **extra)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response
