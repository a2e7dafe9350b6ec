"""The SDK's regulator calls: a department's statistics catalogue, cohort queries, the
privacy budget the ledger shows spent.

A mixin of ``CreditShareClient`` (kept apart so the client stays small). A cohort query
is built and checked here against the catalogue the nodes publish (so a typo fails
before anything is recorded or spent), signed with the regulator's certified request-
signing key exactly as a bank signs a query, and sent; the coordinator records it in the
ledger, relays it to every node of the department in the chains asked, and adds their
ciphertexts. Only this client holds the Paillier private key: it decrypts the sums,
unpacks them with the layout the query and catalogue fix (``statistics.Layout``), and
turns them into figures with error bars (``statistics.decode``).

Every figure is already noisy when it leaves a node (each node adds the full discrete
Laplace noise for its own part), so what this client decrypts is differentially private
whoever else sees it; the error bars say how far from the plaintext figure it may be.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from creditshare._canonical import canonical_json
from creditshare.client._identity import Identity
from creditshare.crypto import Ciphertext, PrivateKey
from creditshare.errors import ClientError, CreditShareError, InvalidInputError, ProblemError
from creditshare.identity import Chain
from creditshare.signed import SignedCohortQuery
from creditshare.statistics import Catalogue, CohortQuery, CohortResult, Layout, decode

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_EPSILON",
    "DEFAULT_MIN_CELL",
    "ROW_FIELDS",
    "CohortAnswer",
    "NodeOutcome",
    "StatisticsCalls",
    "catalogue_of",
    "cohort_rows",
    "sign_cohort_query",
]

#: What a query spends unless told otherwise (nodes refuse more than their per-query cap,
#: 2.0 by default; the allowance per period is 10 by default).
DEFAULT_EPSILON = 1.0
#: Cells with fewer (noisy) enterprises than this are suppressed.
DEFAULT_MIN_CELL = 10
#: The probability each stated error bound holds.
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What one node of the department did with the query."""

    node_id: str
    chain: str
    #: ``ok`` (its part is in the sums), ``refused`` (budget, credential...), ``failed``.
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class CohortAnswer:
    """A decrypted cohort query: the figures, the signed query they answer, and where it
    is recorded (the ledger index: anyone auditing the regulator sees its ε there)."""

    query: CohortQuery
    catalogue: Catalogue
    result: CohortResult
    query_id: str
    ledger_index: int
    #: Nodes whose parts are in the sums (the ``k`` of every error bar).
    additions: int
    nodes: tuple[NodeOutcome, ...]
    #: The probability each figure's bound holds.
    confidence: float
    #: The decrypted noisy totals in layout order (``decode`` them at another confidence).
    values: tuple[int, ...] = field(repr=False)
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def answered(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.status == "ok"]

    @property
    def left_out(self) -> list[NodeOutcome]:
        """Nodes whose parts are missing (refused or failed), with their reasons."""
        return [n for n in self.nodes if n.status != "ok"]

    @property
    def columns(self) -> list[str]:
        """The keys of every row, in order (a CSV header)."""
        return ["date", *self.query.group_by, *ROW_FIELDS]

    def rows(self) -> list[dict[str, Any]]:
        """``cohort_rows`` of the figures."""
        return cohort_rows(self.result)

    def to_json(self) -> dict[str, Any]:
        """One JSON document: the signed query (ε included), where the ledger records it,
        which nodes' parts are in it (and why the others' are not), every figure."""
        return {
            "query": self.query.document(),
            "query_id": self.query_id,
            "ledger_index": self.ledger_index,
            "confidence": self.confidence,
            "additions": self.additions,
            "nodes": [
                {"node_id": n.node_id, "chain": n.chain, "status": n.status, "reason": n.reason}
                for n in self.nodes
            ],
            "rows": self.rows(),
        }


#: The columns of a flat row after the date and the group's dimensions.
ROW_FIELDS = ("measure", "level", "value", "bound", "suppressed", "withheld_at")


def cohort_rows(result: CohortResult) -> list[dict[str, Any]]:
    """``result.rows()`` (one row per cell and figure: date, one column per grouped
    dimension, then ``ROW_FIELDS``), except that a suppressed cell's value and bound are
    None: nothing about it was released, and a 0 ± 0 would read as a figure."""
    rows = result.rows()
    for row in rows:
        if row["suppressed"]:
            row["value"] = row["bound"] = None
    return rows


def sign_cohort_query(identity: Identity, query: CohortQuery) -> SignedCohortQuery:
    """The regulator's signature over ``query`` (its request-signing key, certified by
    the chain CAs with role ``regulator``); every node checks it against that
    credential, and the ledger keeps it, ε included."""
    if query.regulator != identity.participant_id:
        raise ClientError(
            f"the query names regulator {query.regulator!r} but the signing identity is "
            f"{identity.participant_id!r}"
        )
    return SignedCohortQuery.sign(query.document(), identity.signing_key)


def _names(values: Sequence[str] | str | None, what: str) -> tuple[str, ...]:
    """A list option as a tuple (a bare string is refused: ``"region"`` is not
    ``["r", "e", ...]``, and ``"region,industry"`` is split on commas for convenience)."""
    if values is None:
        return ()
    if isinstance(values, str):
        return tuple(v.strip() for v in values.split(",") if v.strip())
    out = tuple(str(v).strip() for v in values)
    if any(not v for v in out):
        raise ClientError(f"{what}: an empty name")
    return out


class StatisticsCalls:
    """A regulator's statistics calls (see ``CreditShareClient``)."""

    _registered: set[str]

    # Provided by CreditShareClient.
    def _request(self, method: str, path: str, *, text: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _with_credentials(self, send: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def register_paillier_key(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def private_key(self) -> PrivateKey:
        raise NotImplementedError

    @property
    def identity(self) -> Identity:
        raise NotImplementedError

    # catalogue ------------------------------------------------------------------------

    def statistics_catalogue_raw(self, department: str) -> dict[str, Any]:
        """``GET /v1/statistics/catalogue``: {department, catalogue, digest, nodes}, as
        sent, once ``catalogue_of`` has checked it (valid, its digest the one stated)."""
        result: dict[str, Any] = self._request(
            "GET", "/v1/statistics/catalogue", params={"department": department}
        )
        catalogue_of(result, department)
        return result

    def statistics_catalogue(self, department: str) -> Catalogue:
        """The department's statistics catalogue as its nodes publish it: the dimensions a
        query may group by (with their levels) and the columns it may sum (with their
        clipping bounds and unit). Validated, and its digest recomputed here: a query
        names that digest, and every node refuses a query made against another one."""
        body = self._request("GET", "/v1/statistics/catalogue", params={"department": department})
        return catalogue_of(body, department)

    # queries --------------------------------------------------------------------------

    def cohort_query(
        self,
        department: str,
        *,
        group_by: Sequence[str] | str = (),
        measures: Sequence[str] | str = ("count",),
        dates: Sequence[str] | None = None,
        chains: Sequence[str] | None = None,
        epsilon: float = DEFAULT_EPSILON,
        min_cell: int = DEFAULT_MIN_CELL,
        catalogue: Catalogue | None = None,
    ) -> CohortQuery:
        """The query this regulator would sign, checked against the department's catalogue
        (fetched unless given): every name known, ε and min_cell in range. Nothing is sent
        or spent. ``chains`` None: all three chains; ``dates`` None: each node's latest
        snapshot."""
        catalogue = catalogue or self.statistics_catalogue(department)
        wanted = _names(chains, "chains") or tuple(c.value for c in Chain)
        try:
            query = CohortQuery(
                department=department,
                chains=tuple(sorted({Chain(c).value for c in wanted})),
                group_by=_names(group_by, "group_by"),
                measures=_names(measures, "measures"),
                dates=tuple(sorted(set(dates or ()))),  # the document wants them sorted
                epsilon=float(epsilon),
                min_cell=int(min_cell),
                key_fingerprint=self.private_key.public_key.fingerprint(),
                catalogue_digest=catalogue.digest,
                request_id=secrets.token_hex(16),
                regulator=self.identity.participant_id,
                time=datetime.now(UTC).replace(microsecond=0),
            )
        except ValueError as exc:
            if isinstance(exc, CreditShareError):
                raise
            raise InvalidInputError(f"chains: {exc}") from exc  # Chain("xyz")
        # from_document validates every field the way nodes will (ranges, order, sizes).
        query = CohortQuery.from_document(query.document())
        query.check_against(catalogue)
        return query

    def run_cohort_query(
        self,
        department: str,
        *,
        group_by: Sequence[str] | str = (),
        measures: Sequence[str] | str = ("count",),
        dates: Sequence[str] | None = None,
        chains: Sequence[str] | None = None,
        epsilon: float = DEFAULT_EPSILON,
        min_cell: int = DEFAULT_MIN_CELL,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> CohortAnswer:
        """Sign, send, decrypt and decode one cohort query; the figures with what it cost
        and which nodes' parts are in them (``cohort_statistics`` returns only the figures).

        The regulator's Paillier key is registered only when the coordinator says it does
        not know it (then a fresh query is signed and sent once more: nothing was
        recorded or spent for the first)."""
        if not 0 < confidence < 1:
            raise ClientError(f"confidence must be between 0 and 1 (exclusive), not {confidence}")
        catalogue = self.statistics_catalogue(department)

        def ask() -> tuple[CohortQuery, Any]:
            query = self.cohort_query(
                department,
                group_by=group_by,
                measures=measures,
                dates=dates,
                chains=chains,
                epsilon=epsilon,
                min_cell=min_cell,
                catalogue=catalogue,
            )
            body = {"request": sign_cohort_query(self.identity, query).to_json()}
            sent = self._with_credentials(
                lambda: self._request("POST", "/v1/statistics", json=body)
            )
            return query, sent

        fingerprint = self.private_key.public_key.fingerprint()
        try:
            query, body = ask()
        except ProblemError as exc:
            if exc.status != 422 or exc.body.get("field") != "key_fingerprint":
                raise
            if fingerprint in self._registered:
                raise
            self.register_paillier_key()
            query, body = ask()
        try:
            return _answer(body, query, catalogue, self.private_key, confidence)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, CreditShareError):
                raise
            raise ClientError(f"malformed statistics answer from the coordinator: {exc!r}") from exc

    def cohort_statistics(
        self,
        department: str,
        group_by: Sequence[str] | str = (),
        measures: Sequence[str] | str = ("count",),
        dates: Sequence[str] | None = None,
        chains: Sequence[str] | None = None,
        epsilon: float = DEFAULT_EPSILON,
        min_cell: int = DEFAULT_MIN_CELL,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> CohortResult:
        """Cohort figures of one department across the chains, each a value ± bound at
        ``confidence``; cells whose noisy count is below ``min_cell`` are suppressed.

        ``group_by``: up to 4 names of the catalogue's dimensions (``chain``, ``region``
        and the department's own, e.g. ``industry``); ``measures``: up to 8 of
        ``count``, ``sum:<column>``, ``mean:<column>``, ``distribution:<dimension>``;
        ``dates``: up to 12 ISO dates (the snapshot in force at the end of each UTC day),
        None for each node's latest; ``epsilon``: what the query spends of this
        regulator's allowance at every node (0 < ε ≤ 10; nodes cap it per query).
        """
        return self.run_cohort_query(
            department,
            group_by=group_by,
            measures=measures,
            dates=dates,
            chains=chains,
            epsilon=epsilon,
            min_cell=min_cell,
            confidence=confidence,
        ).result

    def privacy_budget(self) -> dict[str, Any]:
        """``GET /v1/statistics/budget``: per period, the ε this regulator's recorded
        statistics queries spent according to the ledger. Informational: each node keeps
        its own account and refuses a query that would exceed its allowance."""
        result: dict[str, Any] = self._request("GET", "/v1/statistics/budget")
        return result


def catalogue_of(body: Mapping[str, Any], department: str) -> Catalogue:
    """The catalogue in a ``GET /v1/statistics/catalogue`` answer, validated; its digest
    recomputed here must be the one the answer states (and the nodes check)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("catalogue"), Mapping):
        raise ClientError(f"the coordinator sent no catalogue for department {department!r}")
    catalogue = Catalogue.from_bytes(canonical_json(dict(body["catalogue"])))
    if catalogue.department != department:
        raise ClientError(
            f"asked for the catalogue of {department!r}, got that of {catalogue.department!r}"
        )
    if catalogue.digest != body.get("digest"):
        raise ClientError(
            f"the catalogue of {department!r} does not have the digest the coordinator "
            f"states ({str(body.get('digest'))[:16]}…): refusing to query against it"
        )
    return catalogue


def _answer(
    body: Any,
    query: CohortQuery,
    catalogue: Catalogue,
    key: PrivateKey,
    confidence: float,
) -> CohortAnswer:
    """Decrypt and decode a ``POST /v1/statistics`` answer to ``query``."""
    if not isinstance(body, dict):
        raise ClientError("the statistics answer is not a JSON object")
    if body.get("query_id") != query.request_id:
        raise ClientError(
            f"the statistics answer is for query {str(body.get('query_id'))[:32]!r}, "
            f"not {query.request_id!r}"
        )
    nodes = tuple(
        NodeOutcome(
            str(n["node_id"]), str(n.get("chain", "")), str(n["status"]), str(n.get("reason") or "")
        )
        for n in body["nodes"]
    )
    additions = int(body["additions"])
    answered = sum(1 for n in nodes if n.status == "ok")
    if additions != answered:
        raise ClientError(
            f"the coordinator says {additions} nodes' parts were added but lists {answered} "
            "that answered"
        )
    if additions < 1:
        reasons = "; ".join(f"{n.node_id}: {n.status} ({n.reason})" for n in nodes) or "none"
        raise ClientError(f"no node answered the cohort query: {reasons}")
    public = key.public_key
    layout = Layout.for_query(query, catalogue, public, additions)
    texts = body["ciphertexts"]
    if not isinstance(texts, list) or len(texts) != layout.ciphertexts:
        count = len(texts) if isinstance(texts, list) else "no list of"
        raise ClientError(
            f"the statistics answer has {count} ciphertexts; the query's layout needs "
            f"{layout.ciphertexts}"
        )
    plaintexts = []
    for text in texts:
        try:
            raw = base64.b64decode(str(text).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ClientError("a statistics ciphertext is not valid base64") from exc
        plaintexts.append(key.raw_decrypt(Ciphertext.from_bytes(public, raw).value))
    values = layout.unpack(plaintexts)  # signed sums, DecryptionOverflowError if a slot wrapped
    result = decode(values, query, catalogue, nodes=additions, confidence=confidence)
    return CohortAnswer(
        query=query,
        catalogue=catalogue,
        result=result,
        query_id=str(body["query_id"]),
        ledger_index=int(body["ledger_index"]),
        additions=additions,
        nodes=nodes,
        confidence=confidence,
        values=tuple(values),
        raw=body,
    )
