"""A regulator's cohort query end to end, and what its recorded queries spent.

Order matters, as on the bank's path: everything that can be refused without spending
anything is checked first (the signature against the caller's credentials, the key
binding, the department's nodes and their agreed catalogue, the query against that
catalogue); then the ``statistics`` record is appended, and only then is any node
asked. Nodes that refuse for budget are recorded in a ``refusal`` record naming them;
when every node asked refused, the regulator gets a 403 after that record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from creditshare.coordinator._db import Participant
from creditshare.coordinator._schemas import LedgerEntryOut
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.statistics._bodies import (
    BudgetOut,
    BudgetPeriodOut,
    CohortNodeOut,
    StatisticsIn,
    StatisticsOut,
)
from creditshare.coordinator.statistics._fan_out import cohort_fan_out
from creditshare.coordinator.statistics._refusals import parse_refusal_reason, refusal_reason
from creditshare.crypto import PublicKey
from creditshare.errors import (
    ConflictError,
    InvalidInputError,
    NoNodeAnsweredError,
    NotFoundError,
    PermissionDeniedError,
    PrivacyBudgetExceededError,
)
from creditshare.identity import Chain
from creditshare.ledger import QueryRecord, parse_record
from creditshare.signed import RECORD_TIME_WINDOW, SignedCohortQuery
from creditshare.statistics import CohortQuery, Layout, period_of

if TYPE_CHECKING:
    from creditshare.coordinator._services import Services

__all__ = [
    "PURPOSE",
    "budget",
    "department_nodes",
    "run_cohort_query",
    "subject_of",
]

#: The purpose of statistics records and their refusals.
PURPOSE = "statistics"
Period = Literal["month", "quarter", "year"]


def subject_of(regulator: str) -> str:
    """The ledger subject of a regulator's statistics records: in no enterprise's log."""
    return f"statistics:{regulator}"


def department_nodes(
    services: Services, department: str, chains: tuple[str, ...] = ()
) -> list[NodeEntry]:
    """The registered nodes of ``department`` on ``chains`` (every chain if empty)."""
    wanted = {Chain(c) for c in chains} or set(Chain)
    nodes = [n for n in services.registry.nodes if n.department == department]
    if not nodes:
        raise NotFoundError(f"no data node of department {department!r} is registered").at(
            "department"
        )
    nodes = [n for n in nodes if n.chain in wanted]
    if not nodes:
        names = ", ".join(sorted(c.value for c in wanted))
        raise InvalidInputError(
            f"no data node of department {department!r} is registered on chain(s) {names}"
        ).at("chains")
    return nodes


@dataclass(frozen=True, slots=True)
class _Checked:
    signed: SignedCohortQuery
    query: CohortQuery
    key: PublicKey


def _checked(services: Services, caller: Participant, body: StatisticsIn) -> _Checked:
    """The signed query, its fields, its signer and its key: the blocking checks, in one
    trip off the event loop."""
    signed = SignedCohortQuery.from_json(body.request.model_dump())
    query = CohortQuery.from_document(signed.document)
    if query.regulator != caller.id:
        raise PermissionDeniedError(
            f"the signed query names regulator {query.regulator!r}, not the caller"
        ).at("regulator")
    services.credentials.check_signed(caller.id, signed)
    key = services.paillier_keys.resolve(caller, query.key_fingerprint)
    _check_new(services, caller, query.request_id)
    return _Checked(signed, query, key)


def _record(
    services: Services, caller: Participant, checked: _Checked, at: datetime, **fields: Any
) -> QueryRecord:
    query = checked.query
    base: dict[str, Any] = {
        "kind": "statistics",
        "query_id": query.request_id,
        "time": at,
        "uscc": "",
        "requester": caller.id,
        "requester_role": caller.role,
        "purpose": PURPOSE,
        "consent_id": "",
        "model_id": "",
        "key_fingerprint": checked.key.fingerprint(),
        "chains": tuple(sorted(query.chains)),
        "indicators": (),
        "request": checked.signed.to_json(),
    }
    return QueryRecord(**(base | fields))


def _check_new(services: Services, caller: Participant, request_id: str) -> None:
    """409 if the caller's ``request_id`` is recorded already: a signed query sent twice
    (a client retrying after a lost answer) would otherwise be answered, and spend the
    regulator's budget on every node, twice. The regulator's own records only, which it
    makes a few of a day; two replicas handed the same request at the same moment can
    still both record it (a node answers one query id once, so the second record is
    refused at every node and spends nothing there; the budget route, which reads the
    ledger, counts its ε)."""
    for leaf in services.ledger.entries_for(subject_of(caller.id)):
        try:
            record = parse_record(leaf.data)
        except InvalidInputError:
            continue
        if record.kind == "statistics" and record.query_id == request_id:
            raise ConflictError(
                f"request_id {request_id} is recorded already (ledger index {leaf.index}): "
                "sign a new query to ask again"
            ).at("request_id")


def _record_time(services: Services, query: CohortQuery) -> datetime:
    """The time the statistics record will carry, or 422 when every node would refuse the
    record for it: nodes want it within ``RECORD_TIME_WINDOW`` of the signed time, a
    narrower window than the coordinator's ``request_max_skew_seconds``. Checked just
    before appending, on the very time appended, so nothing is recorded or spent."""
    at = services.clock()
    if abs(at - query.time) > RECORD_TIME_WINDOW:
        limit = RECORD_TIME_WINDOW.total_seconds()
        raise InvalidInputError(
            f"time {query.time.isoformat()} is {abs(at - query.time).total_seconds():.0f} s "
            f"from the coordinator's clock when recording; the data nodes accept at most "
            f"{limit:.0f} s: sign the query again when you send it"
        ).at("time")
    return at


async def run_cohort_query(
    services: Services, caller: Participant, body: StatisticsIn
) -> StatisticsOut:
    services.ledger.check_can_sign()  # a ledger that refuses to sign: 503, nothing spent
    checked = await asyncio.to_thread(_checked, services, caller, body)
    query, key = checked.query, checked.key
    nodes = department_nodes(services, query.department, tuple(query.chains))
    department = await services.statistics.of(query.department, nodes)
    if query.catalogue_digest != department.digest:
        raise InvalidInputError(
            f"catalogue_digest {query.catalogue_digest[:64]!r} is not the digest of the "
            f"{query.department} catalogue the nodes publish now ({department.digest}): read "
            "GET /v1/statistics/catalogue again and sign the query anew"
        ).at("catalogue_digest")
    query.check_against(department.catalogue)
    layout = await asyncio.to_thread(Layout.for_query, query, department.catalogue, key, len(nodes))
    credentials = await asyncio.to_thread(services.credentials.for_nodes, caller.id)
    record = _record(services, caller, checked, _record_time(services, query))
    subject = subject_of(caller.id)
    receipt = await services.ledger.append_async(record.to_bytes(), subject)
    result = await cohort_fan_out(
        services.broker,
        services.broker.channels.statistics,
        nodes,
        request_id=query.request_id,
        key=key,
        receipt=receipt,
        credentials=credentials,
        expected=layout.ciphertexts,
        seconds=services.settings.node_deadline_seconds,
        metrics=services.broker.metrics,
    )
    for failed in result.of("failed"):
        services.statistics.forget(failed.node.id)  # its catalogue may have moved
    refused = result.of("refused")
    if refused:
        # Budget refusals first: their words say what is left and when it renews.
        refused.sort(key=lambda o: o.kind != "privacy_budget")
        names = [o.node.id for o in refused]
        budget = refused[0].kind == "privacy_budget"
        reason = refusal_reason(names, len(nodes), refused[0].reason, budget=budget)
        refusal = _record(
            services, caller, checked, services.clock(), kind="refusal", reason=reason
        )
        await services.ledger.append_async(refusal.to_bytes(), subject)
        if len(refused) == len(nodes) and budget:
            raise PrivacyBudgetExceededError(
                f"privacy budget exhausted at every node asked ({', '.join(names)}): "
                f"{refused[0].reason}"
            )
        if len(refused) == len(nodes):  # a policy refusal: not an outage, say why
            raise PermissionDeniedError(
                f"every node asked refused the query ({', '.join(names)}; recorded, "
                f"nothing spent): {refused[0].reason}"
            )
    if not result.of("ok"):
        raise NoNodeAnsweredError(
            [{"node": o.node.id, "reason": o.reason} for o in result.outcomes]
        )
    return StatisticsOut(
        query_id=query.request_id,
        ledger_index=receipt.index,
        receipt=LedgerEntryOut.of(receipt),
        additions=len(result.of("ok")),
        ciphertexts=[c.to_text() for c in result.sums],
        nodes=[
            CohortNodeOut(node_id=o.node.id, chain=o.node.chain, status=o.status, reason=o.reason)
            for o in result.outcomes
        ],
    )


def budget(services: Services, caller: Participant, period: Period) -> BudgetOut:
    """Per period, what the caller's recorded statistics queries asked for, from the
    ledger (the nodes keep the allowance; this is what the regulator can check them by)."""
    asked: dict[str, tuple[str, Decimal]] = {}
    refused_by_all: set[str] = set()
    for leaf in services.ledger.entries_for(subject_of(caller.id)):
        try:
            record = parse_record(leaf.data)
            if record.kind == "statistics" and record.request is not None:
                query = CohortQuery.from_document(record.request.get("document"))
                epsilon = Decimal(query.epsilon_text)
                asked[record.query_id] = (period_of(record.time, period), epsilon)
            elif record.kind == "refusal" and record.purpose == PURPOSE:
                counts = parse_refusal_reason(record.reason)
                if counts is not None and counts.by_every_node:
                    refused_by_all.add(record.query_id)
        except InvalidInputError:  # a record this release cannot read: not a query of ours
            continue
    # Decimal: the documents write ε with at most three decimals, and sums stay exact.
    totals: dict[str, tuple[int, Decimal, int]] = {}
    for query_id, (name, epsilon) in asked.items():
        queries, spent, refused = totals.get(name, (0, Decimal(0), 0))
        if query_id in refused_by_all:
            totals[name] = (queries + 1, spent, refused + 1)
        else:
            totals[name] = (queries + 1, spent + epsilon, refused)
    return BudgetOut(
        regulator=caller.id,
        period=period,
        periods=[
            BudgetPeriodOut(period=name, queries=q, epsilon=float(e), refused=r)
            for name, (q, e, r) in sorted(totals.items())
        ],
    )
