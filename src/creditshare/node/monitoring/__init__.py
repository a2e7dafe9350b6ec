"""Post-loan monitoring on a data node: watched subscriptions, events raised at import,
and the Monitoring gRPC service that seals them to the bank each cycle.

- ``_tables``: the subscriptions watched and the outbox of events (revision n0007);
- ``_detection``: the rules, run inside a snapshot import's transaction;
- ``_store``: registration and one cycle's answer (acknowledgements, ends, batches);
- ``_service``: ``Watch`` and ``Monitor``, checked like queries, sealed off the loop,
  with this node's encrypted score share for subscriptions watching score_change.
"""

from creditshare.node.monitoring._detection import Change, detect_events, raised
from creditshare.node.monitoring._service import MAX_CYCLE_SUBSCRIPTIONS, MonitoringService
from creditshare.node.monitoring._store import (
    CyclePlan,
    MonitoringStore,
    PlannedBatch,
    PlannedScore,
    Registration,
)
from creditshare.node.monitoring._tables import (
    AlertEventRow,
    MonitorCycleRow,
    WatchedSubscriptionRow,
)

__all__ = [
    "MAX_CYCLE_SUBSCRIPTIONS",
    "AlertEventRow",
    "Change",
    "CyclePlan",
    "MonitorCycleRow",
    "MonitoringService",
    "MonitoringStore",
    "PlannedBatch",
    "PlannedScore",
    "Registration",
    "WatchedSubscriptionRow",
    "detect_events",
    "raised",
]
