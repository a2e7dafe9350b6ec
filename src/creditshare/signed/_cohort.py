"""A regulator's signed cohort query (``statistics.CohortQuery``).

Its own domain prefix keeps a signature over a cohort query from ever being replayed
as a credit query, a training job or anything else a signing key signs. The document
is checked field by field by ``CohortQuery.from_document`` before a signature is even
looked at: nodes parse it from ledger leaves the coordinator wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from creditshare.errors import InvalidInputError
from creditshare.signed._statements import _Signed

if TYPE_CHECKING:
    from creditshare.statistics import CohortQuery

__all__ = ["SignedCohortQuery"]


@dataclass(frozen=True, slots=True)
class SignedCohortQuery(_Signed):
    """A regulator's signed request for cohort figures of one department."""

    DOMAIN: ClassVar[bytes] = b"creditshare/signed-cohort-query/v1\n"
    NAME: ClassVar[str] = "cohort query"

    @classmethod
    def checked(cls, body: Any) -> dict[str, Any]:
        # Imported here, not at the top: the statistics room brings numpy and OpenDP, and
        # every party that signs or checks a credit query imports this package.
        from creditshare.statistics import CohortQuery

        document = CohortQuery.from_document(body).document()
        if document != body:
            raise InvalidInputError(
                "a signed cohort query must be written as CohortQuery.document() writes it"
            )
        return document

    @property
    def query(self) -> CohortQuery:
        from creditshare.statistics import CohortQuery

        return CohortQuery.from_document(self.document)

    @property
    def requester(self) -> str:
        return str(self.document["regulator"])
