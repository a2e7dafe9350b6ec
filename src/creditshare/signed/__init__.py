"""What a requester signs before anyone acts for it: a query, a training job, a
monitoring subscription.

The coordinator forwards these statements verbatim and the ledger records them, so a
data node can check for itself, from the requester's certified key, exactly who asked
for what, under which consent and for which Paillier key: a coordinator that changed
any of it (put its own key in, widened the chains, named another consent) breaks the
signature. Consent grants and revocations, signed by enterprises, live in ``consent``.
"""

from creditshare.signed._cohort import SignedCohortQuery
from creditshare.signed._psi_transcript import SignedPsiTranscript, psi_transcript_document
from creditshare.signed._statements import (
    MAX_NODES,
    SignedQuery,
    SignedTrainingJob,
    query_document,
    training_document,
)
from creditshare.signed._subscription import SignedSubscription, subscription_document
from creditshare.signed._window import RECORD_TIME_WINDOW

__all__ = [
    "MAX_NODES",
    "RECORD_TIME_WINDOW",
    "SignedCohortQuery",
    "SignedPsiTranscript",
    "SignedQuery",
    "SignedSubscription",
    "SignedTrainingJob",
    "psi_transcript_document",
    "query_document",
    "subscription_document",
    "training_document",
]
