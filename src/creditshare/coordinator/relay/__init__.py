"""How the coordinator talks to data nodes: channels, receipts, and the query fan-out.

A subpackage because the coordinator is one flat room near REVIEW's ~30-module
threshold, and these pieces form one capability with one inbound face
(``QueryBroker``): the rest of the coordinator calls nodes only through it. Each
module has one job:

- ``_channels``: a channel and stubs per node (mTLS), cached Describe answers;
- ``_receipts``: proving a query's receipt to a node, the stale-head retry loop with
  its per-node locks and caches, and ``call_failure``, the one mapping from a failed
  node call to our failure (queries, training relays, cosigning, revocations);
- ``_answers``: the two answer forms (plain, packed), their checks and their sums;
- ``_fan_out``: one query path over either form, and the revocation fan-out;
- ``_tree_chain``: a tree model's score, the private chain over its owning nodes;
- ``_broker``: the facade that wires them.
"""

from creditshare.coordinator.relay._answers import (
    NodeAnswer,
    NodeFailure,
    PackedAnswer,
    PackedProfile,
    QueryResult,
)
from creditshare.coordinator.relay._broker import QueryBroker
from creditshare.coordinator.relay._channels import (
    MAX_CATALOGUE_TEXT,
    MAX_INDICATOR_BANDS,
    MAX_NODE_INDICATORS,
    NodeCatalogue,
)
from creditshare.coordinator.relay._receipts import CallFailure, HeadKeptMovingError, call_failure
from creditshare.coordinator.relay._tree_chain import chain_nodes

__all__ = [
    "MAX_CATALOGUE_TEXT",
    "MAX_INDICATOR_BANDS",
    "MAX_NODE_INDICATORS",
    "CallFailure",
    "HeadKeptMovingError",
    "NodeAnswer",
    "NodeCatalogue",
    "NodeFailure",
    "PackedAnswer",
    "PackedProfile",
    "QueryBroker",
    "QueryResult",
    "call_failure",
    "chain_nodes",
]
