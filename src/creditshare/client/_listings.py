"""The SDK's listing calls: participants, consents, training jobs, indicators, signals,
revocation lists.

A mixin of ``CreditShareClient`` (kept apart so the client stays small). Each call
returns the route's JSON as the coordinator sent it: the CLI prints it as a table or
as JSON, the console renders it, and neither has to know a second shape.

The coordinator decides who sees what (a bank the consents granted to it, a bureau
its own jobs, an operator everything); these calls only ask. Consents and training
jobs come newest first, a page at a time: ``limit`` of them (at most 1000), and the
next page is ``before=<the last item's id>``.
"""

from __future__ import annotations

from typing import Any

from creditshare.client._http import segment
from creditshare.errors import ProblemError
from creditshare.identity import Uscc

__all__ = ["PAGE_LIMIT", "ListingCalls"]

#: Items one page holds unless asked otherwise (the coordinator's default too).
PAGE_LIMIT = 100


def _page(limit: int, before: str | None, **filters: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    params["limit"] = limit
    if before is not None:
        params["before"] = before
    return params


class ListingCalls:
    """What a participant lists and cancels (see ``CreditShareClient``)."""

    # Provided by CreditShareClient.
    def _request(self, method: str, path: str, *, text: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def participants(self, role: str | None = None) -> list[dict[str, Any]]:
        """Every participant (operators only), by id, or only those of ``role`` (bank,
        bureau, department, enterprise, operator): id, role, name, uscc, signing_key,
        disabled, created_at."""
        params = {"role": role} if role is not None else None
        result: list[dict[str, Any]] = self._request("GET", "/v1/participants", params=params)
        return result

    def held_consents(
        self, *, uscc: str | None = None, limit: int = PAGE_LIMIT, before: str | None = None
    ) -> list[dict[str, Any]]:
        """The caller's consents, newest first: a bank's or bureau's those granted to it,
        an enterprise's those it granted, an operator's all; only those about ``uscc`` if
        given. Each is a ``ConsentOut`` (consent_id, uscc, grantee, purpose, the signed
        document with its validity, uses, max_uses, revoked, created_at)."""
        code = str(Uscc.parse(uscc)) if uscc is not None else None  # fail before a round trip
        params = _page(limit, before, uscc=code)
        result: list[dict[str, Any]] = self._request("GET", "/v1/consents", params=params)
        return result

    def enterprise_consents(self, uscc: str) -> list[dict[str, Any]]:
        """Every consent the enterprise ``uscc`` granted (that enterprise's own key only),
        oldest first."""
        path = f"/v1/enterprises/{segment(Uscc.parse(uscc))}/consents"
        result: list[dict[str, Any]] = self._request("GET", path)
        return result

    def training_jobs(
        self, status: str | None = None, *, limit: int = PAGE_LIMIT, before: str | None = None
    ) -> list[dict[str, Any]]:
        """A bureau's own training jobs (an operator: every bureau's), newest first,
        optionally only those in ``status`` (aligning, training, finished, failed,
        cancelled). Each has id, bureau, model_id, model_type, status, nodes, config,
        progress, sizes, error, created_at, updated_at; the per-epoch curve is in
        ``training_job(id)``."""
        params = _page(limit, before, status=status)
        result: list[dict[str, Any]] = self._request("GET", "/v1/training-jobs", params=params)
        return result

    def cancel_training_job(self, job_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel a job (its bureau, or an operator): every node drops it and stops its
        workers, and its model id is free again. Returns the job, status ``cancelled``
        (or as it ended, if it had)."""
        path = f"/v1/training-jobs/{segment(job_id)}/cancel"
        result: dict[str, Any] = self._request("POST", path, json={"reason": reason})
        return result

    def signals(self) -> list[dict[str, Any]]:
        """The signal types a monitoring subscription may choose: type, severity, rule,
        description, threshold bounds and default, and the nodes (chains) raising each."""
        result: list[dict[str, Any]] = self._request("GET", "/v1/signals")
        return result

    def revocation_lists(self) -> list[dict[str, Any]]:
        """The chain CAs' revocation lists the coordinator relays to the nodes: issuer,
        number, this_update, next_update (a list past next_update makes nodes refuse)."""
        result: list[dict[str, Any]] = self._request("GET", "/v1/revocation-lists")
        return result

    def indicators(self) -> list[dict[str, Any]]:
        """The indicators the network publishes (what a consent may name): name,
        description, bands, departments, chains, nodes."""
        result: list[dict[str, Any]] = self._request("GET", "/v1/indicators")
        return result

    def readiness(self) -> dict[str, Any]:
        """The coordinator's ``/readyz`` body, whether it answered 200 (ready, or
        ``"degraded"``) or 503 (not ready: the body says what failed), so a caller sees
        why rather than only that it is not ready. Any other refusal raises."""
        try:
            body = self._request("GET", "/readyz")
        except ProblemError as exc:
            if exc.status != 503:
                raise
            body = exc.body
        return dict(body) if isinstance(body, dict) else {}

    def metrics_text(self) -> str:
        """The coordinator's Prometheus metrics, as text (sent with this client's API key:
        a coordinator may keep them for operators)."""
        text: str = self._request("GET", "/metrics", text=True)
        return text
