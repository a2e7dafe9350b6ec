"""The HTTP contract, checked against a live coordinator with real nodes (issue 10, class 9).

A property-based fuzzer (Schemathesis 4 over Hypothesis) generates requests for every
operation of the coordinator's own /openapi.json, positive (valid by the schema) and
negative (invalid by it), each sent with the API key of a randomly drawn role
(operator, bank, bureau, enterprise, or none), and validates every response with:

* ``not_a_server_error``: no 5xx, whatever the input;
* ``status_code_conformance``: every status the coordinator answers is documented
  for that operation (the error responses _openapi.py adds by rules);
* ``content_type_conformance``: the documented media type, so problem+json for errors;
* ``response_schema_conformance``: bodies (successes and problems) match their schemas;
* ``response_headers_conformance``: documented required headers (WWW-Authenticate
  on 401, Retry-After on 429) are sent;
* ``negative_data_rejection``: a request the schema calls invalid gets a 4xx, so the
  documented bounds are the enforced ones;
* ``ignored_auth``: an operation declaring the bearer scheme refuses requests without
  a key or with a made-up one.

Not enabled: ``positive_data_acceptance`` (a request valid by the schema may still be
refused by the domain: a USCC's check character, a consent's signature, a job step
out of order, so a 4xx there is no contract breach), the stateful checks
(``use_after_free``, ``ensure_resource_availability``: the API has no DELETE) and
``max_response_time`` (no timings in tests). Positive cases get real values for some
body members and path parameters (``Parties.hints``/``known``) so that they reach
the database, the ledger and the nodes instead of stopping at the first lookup.

Bounded and deterministic: ``EXAMPLES`` cases per operation and mode, ``derandomize``
(the seed follows from the test), no example database, no shrinking. The federation is
its own (one chain, two departments, coordinator on PostgreSQL when the test server is
configured, else SQLite): the fuzzer disables, revokes and fails things, so it must not
share the session federation other tests rely on.

Failures that belong to code other branches of issue 10 are fixing are listed in
``KNOWN_FAILURES_FIXED_ELSEWHERE`` (operation, input, response, owner); the lead empties
it after merging. Anything else fails the test with the request that caused it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from creditshare.client import Identity
from creditshare.consent import Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.identity import Chain

from .._databases import POSTGRES_ENV, fresh_postgres_database
from .conftest import Trust, register_fresh_key, signed_job_body

#: Generated cases per operation and generation mode (29 operations × 2 modes).
EXAMPLES = int(os.environ.get("CREDITSHARE_CONTRACT_EXAMPLES", "25"))
ROLES = ("operator", "bank", "bureau", "enterprise", "anonymous")
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]
#: A body the schema calls invalid may also be refused for its size before it is read
#: (413): long strings of escaped characters outgrow the 64 KiB limit before their
#: maxLength is checked. That is a rejection too.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
            }
        }
    }
)
PROBLEM_JSON = "application/problem+json"
AnyCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]


@dataclass(frozen=True)
class Found:
    """One failed check: what was sent, what came back, which check said no."""

    operation: str
    role: str
    mode: str
    status: int
    check: str
    title: str
    body: str
    request: str

    def __str__(self) -> str:
        return (
            f"{self.operation} as {self.role} ({self.mode}): {self.check}: {self.title}\n"
            f"  request {self.request[:600]}\n  response {self.status} {self.body}"
        )


@dataclass(frozen=True)
class KnownFailure:
    """A failure whose fix lies on another branch: which operations (a regex over
    "METHOD /path/template"), which status and checks, a regex the request matches, a
    phrase of the response, and whose fix it is."""

    operations: str
    status: int
    checks: frozenset[str]
    request: str
    response_contains: str
    owner: str

    def covers(self, found: Found) -> bool:
        return (
            re.fullmatch(self.operations, found.operation) is not None
            and found.status == self.status
            and found.check in self.checks
            and re.search(self.request, found.request) is not None
            and self.response_contains in found.body
        )


_SERVER_ERROR = frozenset({"ServerError", "UndefinedStatusCode"})

#: Failures the fuzzer finds in code other helpers of issue 10 are changing right now.
#: Each names the operations, the input, the response and the owner; the lead empties
#: this list after merging their branches (the test then holds the merged code to zero).
KNOWN_FAILURES_FIXED_ELSEWHERE: tuple[KnownFailure, ...] = ()


@pytest.fixture(scope="module")
def contract_federation(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[Federation]:
    """One chain, two departments; the coordinator on PostgreSQL where the suite has one
    (NUL characters and integer ranges behave differently there)."""
    work = tmp_path_factory.mktemp("contract")
    overrides: dict[str, object] = {
        # The fuzzer sends a few hundred requests a minute with each key.
        "participant_requests_per_minute": 100_000,
        "enterprise_queries_per_day": 100_000,
        "refusals_per_day": 100_000,
        # ...and made-up keys from one address: those are throttled (429) in production.
        "auth_failures_per_key_id_per_minute": 100_000,
        "auth_failures_per_address_per_minute": 100_000,
    }

    def run(url: str | None) -> Iterator[Federation]:
        if url:
            overrides["database_url"] = url
        layout = FederationLayout.write(
            work,
            data_dir,
            chains=[Chain.YRD],
            departments=("tax", "market"),
            coordinator_overrides=overrides,
        )
        layout.import_data()
        with Federation(layout) as running:
            yield running

    if os.environ.get(POSTGRES_ENV):
        with fresh_postgres_database() as url:
            yield from run(url)
    else:
        yield from run(None)


@dataclass
class Parties:
    """API keys by role, and real values that let generated cases reach past 404/422."""

    url: str
    keys: dict[str, str]
    #: Path parameters that name existing resources.
    known: dict[str, str]
    #: Body members that, set to one of these, pass the first checks (positive cases only).
    hints: dict[str, st.SearchStrategy[Any]]
    job_body: dict[str, Any]
    bureau_identity: Identity
    last_job: str | None = None

    def fresh_job(self) -> str | None:
        """A new training job of the bureau, for each training operation: the fuzzer
        fails and finishes jobs, which ends them for the operations after it. The one
        before is cancelled (a bureau runs a bounded number of jobs at once)."""
        headers = {"Authorization": f"Bearer {self.keys['bureau']}"}
        if self.last_job is not None:
            httpx.post(
                f"{self.url}/v1/training-jobs/{self.last_job}/cancel",
                headers=headers,
                json={},
                timeout=60,
            )
        body = {**self.job_body, "model_id": f"contract-{uuid.uuid4().hex[:12]}"}
        response = httpx.post(
            f"{self.url}/v1/training-jobs",
            headers={"Authorization": f"Bearer {self.keys['bureau']}"},
            json=signed_job_body(self.bureau_identity, body),
            timeout=60,
        )
        assert response.status_code == 201, response.text
        self.last_job = str(response.json()["id"])
        return self.last_job


@pytest.fixture(scope="module")
def parties(contract_federation: Federation, bank_key: PrivateKey) -> Iterator[Parties]:
    """A participant of each role, registered through the API as Trust does, and a
    consent of the enterprise for the bank and one for the bureau."""
    trust = Trust(contract_federation, bank_key, "contract-bank")
    layout = contract_federation.layout
    uscc = read_enterprises(layout.data_dir)[0]["uscc"]
    enterprise_key = trust.enterprise_api_key(uscc)
    bureau_api_key, bureau_identity = trust.participant("contract-bureau", "bureau", "Test Bureau")
    bureau = {"api_key": bureau_api_key}
    bank_consent = trust.consent(uscc)
    bureau_consent = trust.consent(uscc, grantee="contract-bureau")
    nodes = [n.node_id for n in layout.nodes]
    public_key = bank_key.public_key.to_text()
    bureau_fingerprint = register_fresh_key(layout.coordinator_url, bureau["api_key"])
    yield Parties(
        url=layout.coordinator_url,
        keys={
            "operator": trust.operator_api_key,
            "bank": trust.bank_api_key,
            "bureau": bureau["api_key"],
            "enterprise": enterprise_key,
        },
        known={"uscc": uscc, "consent_id": bank_consent},
        hints={
            "node": st.sampled_from(nodes),
            "nodes": st.sampled_from([nodes, nodes[:1]]),
            "uscc": st.just(uscc),
            "consent_id": st.sampled_from([bank_consent, bureau_consent]),
            "model_id": st.sampled_from([DEFAULT_MODEL_ID, "contract-model"]),
            "purpose": st.just(Purpose.PRE_LOAN_REVIEW.value),
            "public_key": st.just(public_key),
            # The bank's (Trust registers it) and the bureau's registered keys.
            "key_fingerprint": st.sampled_from(
                [bank_key.public_key.fingerprint(), bureau_fingerprint]
            ),
            "role": st.sampled_from(["bank", "bureau", "department", "operator"]),
            "id": st.from_regex(r"[a-z0-9][a-z0-9._-]{0,30}", fullmatch=True),
            "chains": st.sampled_from([None, [Chain.YRD.value]]),
        },
        job_body={"nodes": nodes, "key_fingerprint": bureau_fingerprint},
        bureau_identity=bureau_identity,
    )
    trust.close()


def _with_hints(cases: st.SearchStrategy[AnyCase], hints: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Positive cases whose body members are replaced by real values: none, each with
    even odds, or all of them (a third of the cases each). A random node id or USCC
    stops at the first lookup; real ones go on to the database, the ledger and the
    nodes, with the remaining members still generated."""

    @st.composite
    def patched(draw: st.DrawFn) -> AnyCase:
        case = draw(cases)
        how = draw(st.sampled_from(("none", "some", "all")))
        if isinstance(case.body, dict) and how != "none":
            for key in list(case.body):
                if key in hints and (how == "all" or draw(st.booleans())):
                    case.body[key] = draw(hints[key])
        return case

    return patched()


def _request_text(case: AnyCase) -> str:
    body = (
        ""
        if case.body is None or not isinstance(case.body, (dict, list, str, int, float))
        else json.dumps(case.body, default=str)
    )
    # In full (bounded): the allow-list matches anywhere in it; reports shorten it.
    return f"{case.method} {case.formatted_path} query={case.query} body={body[:20_000]}"


def _negative(case: AnyCase) -> bool:
    return case.meta is not None and case.meta.generation.mode is GenerationMode.NEGATIVE


def _negative_at(case: AnyCase, location: ParameterLocation) -> bool:
    return case.meta is not None and case.meta.is_negative_at(location)


def _failures(exc: BaseException) -> list[Failure]:
    if isinstance(exc, FailureGroup):
        return list(exc.exceptions)
    if isinstance(exc, Failure):
        return [exc]
    raise exc


def _fuzz(
    operation: Operation,
    cases: st.SearchStrategy[AnyCase],
    parties: Parties,
    session: requests.Session,
    found: list[Found],
    statuses: Counter[tuple[str, int]],
) -> None:
    """Send ``EXAMPLES`` cases of one operation, each as a drawn role; record failures.

    Roles are drawn from all five, or, for three cases in four, from the operation's
    ``x-roles`` when it has them (otherwise most cases stop at a 403)."""
    admitted = [r for r in operation.definition.raw.get("x-roles", ()) if r in parties.keys]
    roles = st.sampled_from(ROLES)
    if admitted:
        roles = st.one_of(roles, *[st.sampled_from(admitted)] * 3)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(role=roles, case=cases)
    def fuzz(role: str, case: AnyCase) -> None:
        headers: dict[str, str] = {}
        if _negative_at(case, ParameterLocation.HEADER):
            role = "made-up key"  # the case is about a malformed Authorization header
        if role in parties.keys:
            # Our key replaces the one Schemathesis made up from the bearer scheme;
            # "anonymous" keeps the made-up one (or none).
            headers["Authorization"] = f"Bearer {parties.keys[role]}"
            if case.headers:
                case.headers.pop("Authorization", None)
        response = case.call(base_url=parties.url, session=session, headers=headers, timeout=120)
        statuses[(operation.label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (FailureGroup, Failure) as exc:
            for failure in _failures(exc):
                found.append(
                    Found(
                        operation=operation.label,
                        role=role,
                        mode="negative" if _negative(case) else "positive",
                        status=response.status_code,
                        check=type(failure).__name__,
                        title=failure.title,
                        body=response.text[:300],
                        request=_request_text(case),
                    )
                )

    fuzz()


# ===================================================================== the document itself

#: Endless by design (server-sent events until the client hangs up): a generated request
#: that the stream accepts would wait out the call's timeout. Its errors (401/403/404/
#: 410 as problem+json) are tested in tests/integration/test_coordinator_alert_delivery.py.
STREAMS = {"GET /v1/alerts/stream"}

PUBLIC_OPERATIONS = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/ledger/public-key",
}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_document_lists_problem_errors_and_bearer_security(
    contract_federation: Federation,
) -> None:
    url = contract_federation.layout.coordinator_url
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    members = {"errors", "field", "position", "bits", "minimum_bits", "retry_after"}
    assert members | {"recorded", "failed", "node"} <= set(problem["properties"])
    assert "HTTPValidationError" not in document["components"]["schemas"]

    for label, operation in _operations(document):
        responses = operation["responses"]
        if label in PUBLIC_OPERATIONS:
            assert "security" not in operation, label
            assert "401" not in responses, label
        else:
            assert operation["security"] == [{"bearer": []}], label
            assert {"401", "429"} <= set(responses), label
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"], label
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(responses), label
        for status, response in responses.items():
            if int(status) < 400 or label == "GET /readyz":
                continue
            assert response["content"] == {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
            }, (label, status)

    documented = dict(_operations(document))
    assert "404" in documented["GET /v1/consents/{consent_id}"]["responses"]
    assert "409" in documented["POST /v1/participants"]["responses"]
    assert {"403", "503"} <= set(documented["POST /v1/queries"]["responses"])
    assert {"502", "503"} <= set(documented["POST /v1/training-jobs/{job_id}/psi"]["responses"])
    assert "403" not in documented["GET /v1/nodes"]["responses"]
    assert documented["POST /v1/queries"]["x-roles"] == ["bank", "bureau"]
    assert documented["POST /v1/participants"]["x-roles"] == ["operator"]
    assert "x-roles" not in documented["GET /v1/consents/{consent_id}"]
    # The listings' next page is in a Link header, documented on their 200.
    for listing in ("GET /v1/consents", "GET /v1/training-jobs"):
        ok = documented[listing]["responses"]["200"]
        assert 'rel="next"' in ok["headers"]["Link"]["description"], listing
        assert ok["headers"]["Link"]["required"] is False, listing
        assert "content" in ok and ok["description"], listing  # still the list's schema
    # ``field`` is sent with 403/404/409 refusals too (CreditShareError.at), not only 422.
    field = document["components"]["schemas"]["Problem"]["properties"]["field"]["description"]
    assert all(status in field for status in ("403", "404", "409", "422")), field


def test_metrics_security_follows_the_setting(tmp_path: Path) -> None:
    """/metrics is documented as open unless the operator's key is required."""
    init_log_key(tmp_path / "log.pem")
    for required in (False, True):
        settings_ = CoordinatorSettings(
            log_signing_key_file=tmp_path / "log.pem",
            allow_insecure=True,
            database_url=f"sqlite:///{tmp_path / 'coordinator.db'}",
            metrics_require_operator_key=required,
        )
        metrics = create_app(settings_).openapi()["paths"]["/metrics"]["get"]
        assert ("security" in metrics) is required
        assert ("403" in metrics["responses"]) is required
        assert set(metrics["responses"]["200"]["content"]) == {
            "text/plain",
            "application/openmetrics-text",
        }


def test_no_cdn_docs_and_every_error_is_a_problem(contract_federation: Federation) -> None:
    url = contract_federation.layout.coordinator_url
    assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200
    # /docs is served with local assets (tests/unit/test_coordinator_docs.py); ReDoc,
    # which FastAPI loads from a CDN, is not served.
    assert "cdn." not in httpx.get(f"{url}/docs", timeout=30).text
    for path in ("/redoc", "/no-such-route", "/static/swagger/no-such-file.js"):
        response = httpx.get(f"{url}{path}", timeout=30)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["status"] == 404
    wrong_method = httpx.delete(f"{url}/v1/queries", timeout=30)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == PROBLEM_JSON
    assert "POST" in wrong_method.headers["allow"]


@pytest.mark.parametrize(
    ("content", "content_type", "title", "position"),
    [
        (b'{"id": "x", "role": ', "application/json", "Malformed JSON", 20),
        (b'{"id": "x"} trailing', "application/json", "Malformed JSON", 12),
        (b'{"id": "\xff"}', "application/json", "Malformed JSON", 8),
        (b"id=x&role=bank", "application/x-www-form-urlencoded", "Body is not JSON", None),
        (b'{"id": "x"}', "text/plain", "Body is not JSON", None),
    ],
)
def test_malformed_body_is_400_saying_where(
    contract_federation: Federation,
    parties: Parties,
    content: bytes,
    content_type: str,
    title: str,
    position: int | None,
) -> None:
    """Not JSON where JSON is expected: 400 problem+json with the byte at fault,
    nothing registered, and the next good request served."""
    url = parties.url
    operator = {"Authorization": f"Bearer {parties.keys['operator']}"}
    before = httpx.get(f"{url}/v1/participants", headers=operator, timeout=30).json()
    response = httpx.post(
        f"{url}/v1/participants",
        content=content,
        headers={**operator, "content-type": content_type},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["title"] == title
    assert body["errors"][0]["location"] == "body"
    if position is not None:
        assert body["position"] == position
        assert f"byte {position}" in body["detail"]
    else:
        assert content_type in body["detail"]
    after = httpx.get(f"{url}/v1/participants", headers=operator, timeout=30).json()
    assert after == before
    good = httpx.post(
        f"{url}/v1/participants",
        json={"id": f"good-{uuid.uuid4().hex[:8]}", "role": "bank", "name": "Good Bank"},
        headers=operator,
        timeout=30,
    )
    assert good.status_code == 201, good.text


# ===================================================================== the fuzzer


def test_schemathesis_finds_nothing(contract_federation: Federation, parties: Parties) -> None:
    """Every operation, positive and negative cases, as every role: no failed check
    outside the allow-list, credentials really exercised, and the coordinator still
    ready and serving afterwards. Runs last in this file: it changes state."""
    schema = schemathesis.openapi.from_url(f"{parties.url}/openapi.json", config=CONFIG)
    session = requests.Session()
    found: list[Found] = []
    statuses: Counter[tuple[str, int]] = Counter()
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid OpenAPI
        operations.append(result.ok())
    assert len(operations) >= 25

    for operation in operations:
        if operation.label in STREAMS:
            continue
        path_names = {p.name for p in operation.path_parameters}
        known = dict(parties.known)
        if "job_id" in path_names and (job_id := parties.fresh_job()):
            known["job_id"] = job_id
        real = {name: known[name] for name in path_names if name in known}
        positive = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
        if real and len(real) == len(path_names):
            positive = st.one_of(positive, operation.as_strategy(path_parameters=real))
        _fuzz(operation, _with_hints(positive, parties.hints), parties, session, found, statuses)
        try:
            negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            _fuzz(operation, negative, parties, session, found, statuses)
        except Unsatisfiable:
            pass  # nothing in the operation can be made invalid (no parameters, no body)

    # Coverage, for `pytest -s`: how often each operation answered each status.
    print("\n".join(f"{op} {status}: {n}" for (op, status), n in sorted(statuses.items())))
    assert {op.label for op in operations} - STREAMS == {op for op, _ in statuses}
    served = sum(
        n for (op, status), n in statuses.items() if op not in PUBLIC_OPERATIONS and status < 300
    )
    assert served >= 50, "the fuzzer hardly got past authentication: see the statuses above"
    ready = httpx.get(f"{parties.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    bank = {"Authorization": f"Bearer {parties.keys['bank']}"}
    assert httpx.get(f"{parties.url}/v1/nodes", headers=bank, timeout=30).status_code == 200
    for known_failure in KNOWN_FAILURES_FIXED_ELSEWHERE:
        hits = sum(known_failure.covers(f) for f in found)
        print(f"allowed {hits}× {known_failure.status} on {known_failure.operations}")
    unexplained = [f for f in found if not any(k.covers(f) for k in KNOWN_FAILURES_FIXED_ELSEWHERE)]
    kinds: dict[tuple[str, int, str], list[Found]] = {}
    for failure in unexplained:
        kinds.setdefault((failure.operation, failure.status, failure.check), []).append(failure)
    assert not kinds, f"{len(unexplained)} failures of {len(kinds)} kinds:\n" + "\n".join(
        f"[{len(same)}×] {same[0]}" for same in kinds.values()
    )
