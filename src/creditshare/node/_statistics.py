"""The node's side of regulator cohort statistics (``CohortStatistics``: Catalogue, Cohort).

A regulator's signed cohort query reaches the node inside a ledger record (kind
``statistics``) the receipt proves. Before anything is computed the node checks, as for
Score: the receipt (head, inclusion, consistency, freshness); that a credential its CA
vouches for, of role ``regulator``, signed the query and that the record says what it
signed; that the query is for this node's department, chain and catalogue (by digest)
and this very key, at an ε within ``stats_max_epsilon_per_query``, from a regulator in
``stats_regulators`` when that is set. Then it finds the snapshot cube in force at each
of the query's dates (``_cubes``; building the latest one if it is missing), so that a
query the node's state cannot answer (a stale record, a snapshot too large) is refused
with FAILED_PRECONDITION and spends nothing. Only then does it claim the receipt once
and spend the query's ε from the regulator's and the node's budgets for the period in
the same transaction (``_privacy_budget``), and add the full discrete Laplace noise
for its own partials
(``statistics.release``: each node's answer alone is ε-DP), withhold cells whose noisy
count is small, pack the values (``Layout.pack``) and encrypt them under the regulator's
key.

The answer is exactly ``Layout.ciphertexts`` ciphertexts of the key's fixed width,
whatever the data: the number follows from the signed query and the catalogue alone,
so the relay learns nothing from the answer's size, and nothing from its content.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from sqlalchemy.engine import Connection

from creditshare.crypto import PublicKey
from creditshare.errors import (
    CreditShareError,
    InvalidInputError,
    PermissionDeniedError,
    StatisticsUnavailableError,
)
from creditshare.node._authority_store import RefusalLog
from creditshare.node._cubes import CubeStore
from creditshare.node._encryptors import EncryptorCache
from creditshare.node._privacy_budget import PrivacyBudget, milli
from creditshare.node._receipts import ReceiptChecker, ReceiptRefusedError
from creditshare.node._service import guarded, public_key_of
from creditshare.node._settings import NodeSettings
from creditshare.node._trust import AccessLog
from creditshare.proto import statistics_pb2, statistics_pb2_grpc
from creditshare.statistics import (
    MAX_ADDITIONS,
    MAX_NODE_RECORDS,
    Catalogue,
    CohortQuery,
    Cube,
    Layout,
    period_of,
    release,
)

__all__ = ["CohortStatisticsService"]

log = logging.getLogger("creditshare.node")

#: How long a query waits for the key's encryption table: its dozens to hundreds of
#: encryptions cost ~13x more in stock encryption, and the build takes ~0.2 s.
_TABLE_WAIT_SECONDS = 5.0


class CohortStatisticsService(statistics_pb2_grpc.CohortStatisticsServicer):
    def __init__(
        self,
        settings: NodeSettings,
        catalogue: Catalogue,
        checker: ReceiptChecker,
        access_log: AccessLog,
        refusal_log: RefusalLog,
        budget: PrivacyBudget,
        cubes: CubeStore,
        encryptors: EncryptorCache,
    ) -> None:
        self._settings = settings
        self._catalogue = catalogue
        self._catalogue_bytes = catalogue.to_bytes()
        self._checker = checker
        self._access_log = access_log
        self._refusal_log = refusal_log
        self._budget = budget
        self._cubes = cubes
        self._encryptors = encryptors
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)

    async def Catalogue(  # noqa: N802 - gRPC method name
        self,
        request: statistics_pb2.CatalogueRequest,
        context: grpc.aio.ServicerContext[
            statistics_pb2.CatalogueRequest, statistics_pb2.CatalogueResponse
        ],
    ) -> statistics_pb2.CatalogueResponse:
        """What a regulator may ask here (public: dimensions, levels, columns, bounds)."""
        return statistics_pb2.CatalogueResponse(
            node_id=self._settings.node_id,
            department=self._catalogue.department,
            chain=self._settings.chain.value,
            catalogue=self._catalogue_bytes,
            digest=self._catalogue.digest,
        )

    async def Cohort(  # noqa: N802 - gRPC method name
        self,
        request: statistics_pb2.CohortRequest,
        context: grpc.aio.ServicerContext[
            statistics_pb2.CohortRequest, statistics_pb2.CohortResponse
        ],
    ) -> statistics_pb2.CohortResponse:
        async def work() -> statistics_pb2.CohortResponse:
            async with self._slots:
                query, key, ciphertexts = await asyncio.to_thread(self._answer, request)
            log.info(
                "answered statistics query=%r regulator=%r epsilon=%g key=%s",
                query.request_id,
                query.regulator,
                query.epsilon,
                key.fingerprint(),
            )
            return statistics_pb2.CohortResponse(
                node_id=self._settings.node_id, ciphertexts=ciphertexts
            )

        def refused(status: str, exc: CreditShareError) -> None:
            self._refusal_log.add("Cohort", request.request_id[:64], status, str(exc))

        return await guarded(context, work, refused)

    def _answer(
        self, request: statistics_pb2.CohortRequest
    ) -> tuple[CohortQuery, PublicKey, list[bytes]]:
        """Validate, check the receipt and the regulator, spend, then compute; blocking."""
        if not 0 < len(request.request_id) <= 64:
            raise InvalidInputError("request_id must be 1 to 64 characters")
        if not request.HasField("public_key"):
            raise InvalidInputError("public_key is required")
        key = public_key_of(request.public_key)
        if not 1 <= request.additions <= MAX_ADDITIONS:
            raise InvalidInputError(f"additions must be within 1..{MAX_ADDITIONS}")
        receipt = request.receipt if request.HasField("receipt") else None
        # A head the check accepts is stored with the claim: one commit (``_trust``).
        with self._access_log.deferring_heads():
            index, record, query = self._checker.check_statistics(
                receipt, request.request_id, key, request.credentials
            )
            self._admissible(query)
            # Bad input is refused here, before the claim: it spends nothing.
            layout = Layout.for_query(query, self._catalogue, key, request.additions)
            period = period_of(record.time, self._settings.stats_budget_period)
            # The node's own state is resolved before the spend too: a query it cannot
            # answer is refused (FAILED_PRECONDITION) having spent nothing.
            cubes = self._snapshot_cubes(query)

            def spend(conn: Connection) -> None:
                self._budget.spend(conn, index, query.regulator, period, query.epsilon)

            with self._budget.guarded():
                claimed = self._access_log.claim(index, record, "Cohort", also=spend)
        if not claimed:
            raise ReceiptRefusedError(f"receipt for ledger entry {index} was already used")
        values = release(
            cubes,
            query,
            self._catalogue,
            min_cell=max(query.min_cell, self._settings.stats_min_cell),
            chain=self._settings.chain.value,
        )
        plaintexts = layout.pack(values)
        encryptor = self._encryptors.get(key, wait=_TABLE_WAIT_SECONDS)
        ciphertexts = [encryptor.encrypt_encoded(m).to_bytes() for m in plaintexts]
        if len(ciphertexts) != layout.ciphertexts:  # the layout's own promise; never data's
            raise AssertionError("packed ciphertexts differ from the layout's count")
        return query, key, ciphertexts

    def _admissible(self, query: CohortQuery) -> None:
        """Refuse a signed query this node will not answer: another department, chain or
        catalogue than its own, or a larger ε than it allows per query."""
        settings = self._settings
        mismatches = [
            name
            for name, ok in (
                ("department", query.department == self._catalogue.department),
                (
                    "chain",
                    not query.chains or settings.chain.value in {str(c) for c in query.chains},
                ),
                ("catalogue digest", query.catalogue_digest == self._catalogue.digest),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(
                f"the statistics query is not for this node ({settings.node_id}): "
                f"{', '.join(mismatches)}"
            )
        if milli(query.epsilon) > milli(settings.stats_max_epsilon_per_query):
            raise PermissionDeniedError(
                f"the statistics query asks for epsilon {query.epsilon:g}; this node answers "
                f"at most {settings.stats_max_epsilon_per_query:g} per query"
            )
        allowed = settings.stats_regulators
        if allowed and query.regulator not in allowed:
            raise PermissionDeniedError(
                f"regulator {query.regulator!r} is not among the regulators this node "
                f"({settings.node_id}) answers statistics queries for (stats_regulators): "
                "the department must agree to a new regulator first"
            )
        query.check_against(self._catalogue)

    def _snapshot_cubes(self, query: CohortQuery) -> list[Cube | None]:
        """The cube in force at each of the query's dates, checked to be answerable; raises
        StaleRecordError or StatisticsUnavailableError (before any ε is spent)."""
        cubes = self._cubes.cubes(query.dates)
        for day, cube in zip(query.dates or ("latest",), cubes, strict=True):
            if cube is not None and cube.records > MAX_NODE_RECORDS:
                raise StatisticsUnavailableError(
                    # Not the exact count: it would leave the node without noise.
                    f"this node's snapshot in force at {day} holds more than the "
                    f"{MAX_NODE_RECORDS} records a statistics answer can hold: the "
                    "department's records must be split over more nodes"
                )
        return cubes
