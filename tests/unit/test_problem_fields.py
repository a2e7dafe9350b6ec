"""A refusal names the request field it concerns, whatever its status: a form shows it
next to that field instead of above the form."""

from __future__ import annotations

import json

import pytest

from creditshare.coordinator._problems import problem_for
from creditshare.errors import (
    ConflictError,
    ConsentRefusedError,
    CreditShareError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
)
from creditshare.identity import InvalidUsccError, Uscc


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConflictError("participant 'b' already exists").at("id"), 409),
        (ConsentRefusedError("no consent with id 'x'").at("consent_id"), 403),
        (InvalidInputError("grantee 'nobody' is not a participant").at("grantee"), 422),
        (NotFoundError("unknown participant 'p'").at("participant"), 404),
    ],
)
def test_the_named_field_is_in_the_problem_body(error: CreditShareError, status: int) -> None:
    response = problem_for(error)
    body = json.loads(bytes(response.body))
    assert response.status_code == status
    assert body["field"] == error.field
    assert body["detail"] == str(error)


def test_an_error_naming_no_field_has_none_and_its_own_field_wins() -> None:
    plain = json.loads(bytes(problem_for(ConflictError("model exists")).body))
    assert "field" not in plain
    with pytest.raises(InvalidUsccError) as caught:
        Uscc.parse("91110000X")
    assert json.loads(bytes(problem_for(caught.value.at("grantee")).body))["field"] == "uscc"
    limited = RateLimitedError("slow down", retry_after=3).at("uscc")
    response = problem_for(limited)
    assert response.headers["Retry-After"] == "3"  # headers survive
    assert json.loads(bytes(response.body))["field"] == "uscc"
