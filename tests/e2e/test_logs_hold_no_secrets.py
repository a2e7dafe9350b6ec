"""An unexpected database error is logged with its traceback, and never with the SQL
parameters that caused it (they hold consent signatures, USCCs, key hashes)."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import httpx

from creditshare.consent import ConsentGrant, Purpose
from creditshare.demo import Federation, read_enterprises

from .conftest import Trust


def _coordinator_db(federation: Federation) -> str:
    url = federation.layout.coordinator_settings().database_url
    assert url.startswith("sqlite:///")
    return url.removeprefix("sqlite:///")


def test_a_failed_insert_logs_no_parameters(
    small_federation: Federation, small_trust: Trust
) -> None:
    uscc = next(r["uscc"] for r in read_enterprises(small_federation.layout.data_dir))
    client, signing = small_trust.enterprise(uscc)
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc, small_trust.bank_id, Purpose.PRE_LOAN_REVIEW, now, now + timedelta(days=1)
    )
    signed = grant.sign(signing)
    signature = base64.b64encode(signed.signature).decode()
    # Every insert into the consent table now fails inside the database (a trigger that
    # writes to a table that does not exist): an error nobody planned for.
    database = sqlite3.connect(_coordinator_db(small_federation))
    database.execute(
        "CREATE TRIGGER consent_insert_fails BEFORE INSERT ON consent "
        "BEGIN INSERT INTO vanished_table VALUES (1); END"
    )
    database.commit()
    log = small_federation.layout.work_dir / "logs" / "coordinator.log"
    already = len(log.read_text(encoding="utf-8").splitlines())
    try:
        response = httpx.post(
            f"{small_trust.url}/v1/consents",
            json=signed.to_json(),
            headers={"Authorization": f"Bearer {small_trust.enterprise_api_key(uscc)}"},
            timeout=30,
        )
    finally:
        database.execute("DROP TRIGGER consent_insert_fails")
        database.commit()
        database.close()
    assert response.status_code == 500
    assert signature not in response.text and uscc not in response.text

    lines = log.read_text(encoding="utf-8").splitlines()[already:]
    errors = [json.loads(line) for line in lines if '"level": "error"' in line.lower()]
    assert errors, "the unexpected error must be logged"
    logged = "\n".join(lines)
    assert "vanished_table" in logged  # the traceback is there...
    assert "SQL parameters hidden" in logged  # ...its parameters are not
    for secret in (signature, uscc, grant.nonce, grant.consent_id):
        assert secret not in logged

    # Nothing was written, and the next good request is served.
    stored = client.grant_consent(signed)
    assert stored["consent_id"] == grant.consent_id and stored["uses"] == 0
