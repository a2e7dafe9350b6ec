"""The OpenAPI document as the coordinator behaves: errors, their media type, security.

FastAPI generates the success responses from the routes and a 422 in its own
``application/json`` shape; the coordinator answers every error as RFC 9457
``application/problem+json`` (see ``_problems``) and most operations need a bearer
API key. Rather than repeat ``responses=`` and ``openapi_extra=`` on every route,
the generated document is rewritten once here, by rules:

* an operation whose dependencies authenticate the caller (``_deps._caller``)
  gets the ``bearer`` security requirement, 401 and 429 (throttled caller);
  one restricted to roles (``require_roles``) also 403, and ``x-roles`` lists them;
* an operation with a request body gets 400 (malformed or non-JSON body),
  413 (body over the limit) and 422; one with parameters gets 422;
* the domain errors the services raise (404, 409, 403 on ownership, 502/503
  from nodes and the ledger) come from ``_DOMAIN_RULES``, matched on the path
  template, so a new route under an existing resource inherits them;
* ``/metrics`` is text, and needs the operator's key only when configured.

``install_docs`` serves Swagger UI at /docs from the package (``static/swagger``:
swagger-ui-dist, vendored): FastAPI's own page loads it from a public CDN, blank on
a chain's intranet. ReDoc is not served.

The e2e Schemathesis run (tests/e2e/test_api_contract.py) checks the result
against a live coordinator: a status or media type not documented here fails it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from creditshare.coordinator import _deps
from creditshare.coordinator._problems import PROBLEM_JSON

__all__ = ["DOCS_ASSETS", "PROBLEM_SCHEMA", "install_docs", "install_openapi"]

#: Where the vendored Swagger UI files are served from.
DOCS_ASSETS = "/static/swagger"
_SWAGGER_DIR = Path(__file__).parent / "static" / "swagger"

SECURITY_SCHEME = "bearer"

#: The body of every error response (see ``_problems.problem``): RFC 9457 members plus
#: the extension members the coordinator sends with particular errors.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem detail; extension members appear with the errors "
    "that carry them.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "always about:blank"},
        "title": {"type": "string", "description": "the kind of error"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what was wrong, and where"},
        "errors": {
            "type": "array",
            "description": "400/422: each invalid part of the request",
            "items": {
                "type": "object",
                "required": ["location", "message"],
                "properties": {
                    "location": {"type": "string", "description": "e.g. body.chains.0"},
                    "message": {"type": "string"},
                },
            },
        },
        "field": {
            "type": "string",
            "description": "the request field the error concerns, where there is one: on "
            "a 422 the invalid field; on a 403, 404 or 409 the field naming what was refused, "
            "not found or taken (a grantee, a model id, a participant id, a USCC)",
        },
        "position": {
            "type": ["integer", "null"],
            "description": "422 (USCC): the 0-based character at fault; 400: the byte offset",
        },
        "bits": {"type": "integer", "description": "422 (key too small): the key's size"},
        "minimum_bits": {"type": "integer"},
        "retry_after": {"type": "integer", "description": "429: seconds to wait"},
        "recorded": {
            "type": "boolean",
            "description": "403 (consent, privacy budget): the refusal is in the ledger",
        },
        "failed": {
            "type": "array",
            "description": "503: why each node did not answer",
            "items": {"type": "object"},
        },
        "node": {"type": "string", "description": "502: the node that failed"},
    },
    "additionalProperties": True,
}

_TITLES = {
    400: "Malformed request body (not JSON, or not valid JSON)",
    401: "Missing, unknown, revoked or disabled API key",
    403: "The caller's role or relation to the resource does not allow this",
    404: "The resource does not exist",
    409: "Conflicts with the current state (exists already, finished, reserved)",
    410: "Deleted after its retention period (start again without a cursor)",
    413: "Request body over the size limit",
    422: "Invalid parameters or body",
    429: "Too many requests",
    502: "A data node failed",
    503: "No data node answered, or the ledger cannot be extended",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "Bearer",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds until a retry may succeed",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}

#: (method or "*", path-template regex, extra statuses) for errors raised by services.
_DOMAIN_RULES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("POST", r"/v1/participants", frozenset({409})),
    ("*", r"/v1/participants/\{participant_id\}(/.*)?", frozenset({404, 409})),
    # The enterprise itself or an operator (checked in the route, not by role alone).
    ("POST", r"/v1/participants/\{participant_id\}/signing-key", frozenset({403})),
    ("POST", r"/v1/consents", frozenset({403, 409})),
    ("*", r"/v1/consents/\{consent_id\}(/.*)?", frozenset({403, 404, 409})),
    ("*", r"/v1/enterprises/\{uscc\}/.*", frozenset({403})),
    ("*", r"/v1/ledger/(head|checkpoint|cosign|proofs/.*)", frozenset({404})),
    ("*", r"/v1/ledger/entries/.*", frozenset({403, 404})),
    ("POST", r"/v1/queries", frozenset({403, 404, 409, 503})),
    ("POST", r"/v1/paillier-keys", frozenset({409})),
    ("*", r"/v1/paillier-keys/.+", frozenset({404, 409})),
    ("POST", r"/v1/credentials", frozenset({403})),
    ("DELETE", r"/v1/credentials/.+", frozenset({404})),
    ("POST", r"/v1/training-jobs", frozenset({404, 409, 503})),
    ("*", r"/v1/training-jobs/\{job_id\}(/.*)?", frozenset({403, 404, 409, 502, 503})),
    ("POST", r"/v1/subscriptions", frozenset({403, 409, 503})),
    ("*", r"/v1/subscriptions/\{subscription_id\}", frozenset({404, 503})),
    ("POST", r"/v1/monitoring/cycles", frozenset({409, 503})),
    ("GET", r"/v1/alerts(/stream)?", frozenset({404, 410})),
    ("*", r"/v1/webhook", frozenset({404})),
    # An unknown department; nodes publishing different catalogues; none answering (and
    # for a query: its request_id recorded already, 409).
    ("GET", r"/v1/statistics/catalogue", frozenset({404, 502, 503})),
    ("POST", r"/v1/statistics", frozenset({404, 409, 502, 503})),
)


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _authenticates(route: APIRoute) -> bool:
    return any(d.call is _deps._caller for d in _dependencies(route.dependant))


def _roles(route: APIRoute) -> list[str] | None:
    """The roles a ``require_roles`` dependency admits (its closure's set), or None."""
    for dependency in _dependencies(route.dependant):
        call = dependency.call
        if not getattr(call, "__qualname__", "").startswith("require_roles."):
            continue
        for cell in getattr(call, "__closure__", None) or ():
            value = cell.cell_contents
            if isinstance(value, (set, frozenset)) and all(isinstance(v, str) for v in value):
                return sorted(value)
        return []
    return None


def _domain(method: str, path: str) -> set[int]:
    found: set[int] = set()
    for rule_method, pattern, statuses in _DOMAIN_RULES:
        if rule_method in ("*", method) and re.fullmatch(pattern, path):
            found |= statuses
    return found


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _TITLES.get(status, "Error"),
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(path template, route) for every operation, through included routers."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            yield context.path_format or route.path_format, route


def _errors_of(
    path: str, route: APIRoute, method: str, operation: dict[str, Any], metrics_need_key: bool
) -> set[int]:
    statuses = _domain(method, path)
    secured = _authenticates(route) or (path == "/metrics" and metrics_need_key)
    if secured:
        statuses |= {401, 429}
        operation["security"] = [{SECURITY_SCHEME: []}]
    roles = _roles(route)
    if roles is not None:
        operation["x-roles"] = roles
    if roles is not None or (path == "/metrics" and metrics_need_key):
        statuses.add(403)
    if "requestBody" in operation:
        statuses |= {400, 413, 422}
    if operation.get("parameters"):
        statuses.add(422)
    return statuses


def contract(app: FastAPI, metrics_need_key: bool) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with errors, media types and security as served."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key issued by the chain operator: "
            "'Authorization: Bearer cs_<key id>.<secret>'",
        }
    }
    for path, route in _api_routes(app):
        for method in route.methods or ():
            operation = schema["paths"][path][method.lower()]
            responses: dict[str, Any] = operation["responses"]
            for status in _errors_of(path, route, method, operation, metrics_need_key):
                responses[str(status)] = _problem_response(status)
            if path == "/metrics":
                responses["200"]["content"] = {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                }
            if path == "/readyz":
                responses["200"]["description"] = (
                    "Ready: status ok, or degraded when every node of a chain in chains "
                    "is unreachable"
                )
                responses["503"] = {
                    "description": "A check failed: which one, by exception class",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            operation["responses"] = dict(sorted(responses.items()))
    return schema


def install_openapi(app: FastAPI, *, metrics_need_key: bool = False) -> None:
    """Serve the rewritten document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app, metrics_need_key)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, every asset from this coordinator (call with ``docs_url`` and
    ``redoc_url`` None on the app)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=_SWAGGER_DIR), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            # Its default validator badge is an image from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
