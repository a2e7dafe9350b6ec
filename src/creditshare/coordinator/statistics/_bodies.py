"""HTTP bodies of the statistics routes: one schema per direction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from creditshare.coordinator._schemas import SIGNATURE_PATTERN, InputModel, LedgerEntryOut

__all__ = [
    "BudgetOut",
    "BudgetPeriodOut",
    "CatalogueOut",
    "CohortNodeOut",
    "SignedCohortQueryIn",
    "StatisticsIn",
    "StatisticsOut",
]


class SignedCohortQueryIn(InputModel):
    """The regulator's ``SignedCohortQuery`` as ``to_json`` writes it."""

    document: dict[str, Any] = Field(
        description="the CohortQuery document (creditshare.statistics.CohortQuery.document())"
    )
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        description="Ed25519 over the document, by the key the regulator's credential certifies",
    )


class StatisticsIn(InputModel):
    request: SignedCohortQueryIn


class CatalogueOut(BaseModel):
    department: str
    catalogue: dict[str, Any] = Field(
        description="what a query may group by and sum (creditshare.statistics.Catalogue)"
    )
    digest: str = Field(
        description="hex SHA-256 of the canonical catalogue: sign it as catalogue_digest"
    )
    nodes: list[str] = Field(description="the department's nodes that published this catalogue")


class CohortNodeOut(BaseModel):
    node_id: str
    chain: str
    status: Literal["ok", "refused", "failed"] = Field(
        description="ok: its part is in the sums; refused: its privacy budget for the "
        "regulator would be exceeded (nothing spent there); failed: down, slow or an "
        "answer that did not check"
    )
    reason: str = ""


class StatisticsOut(BaseModel):
    query_id: str = Field(description="the signed request_id")
    ledger_index: int = Field(description="the statistics record's leaf in the ledger")
    receipt: LedgerEntryOut = Field(
        description="the statistics record with its inclusion proof and signed tree head"
    )
    additions: int = Field(
        description="how many nodes' answers are added into the sums (those with status ok)"
    )
    ciphertexts: list[str] = Field(
        description="base64, per index the product of the answering nodes' ciphertexts"
    )
    nodes: list[CohortNodeOut]


class BudgetPeriodOut(BaseModel):
    period: str = Field(description='"2026-12", "2026-Q4" or "2026"')
    queries: int = Field(description="statistics queries recorded in the period")
    epsilon: float = Field(
        description="ε of those queries, less those every node refused: the most any one "
        "node can have spent for this regulator in the period"
    )
    refused: int = Field(description="queries every node asked refused for budget")


class BudgetOut(BaseModel):
    regulator: str
    period: Literal["month", "quarter", "year"]
    periods: list[BudgetPeriodOut] = Field(description="oldest first")
    note: str = Field(
        default="informational: each node enforces its own allowance per period and may "
        "have spent less (a node that failed or was not asked spent nothing)"
    )
