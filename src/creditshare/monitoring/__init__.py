"""Post-loan monitoring's shared vocabulary: signal types, events, fixed-size batches.

Nodes raise events, banks open them, the coordinator only relays sealed batches; all
three agree here on what a signal means, what an event holds and how a batch is laid
out and bound (HPKE ``info``) to its subscription, node and cycle. Knows nothing of
HTTP, gRPC or storage.
"""

from creditshare.monitoring._batch import (
    BATCH_BYTES,
    BATCH_EVENTS,
    AlertBatch,
    AlertEvent,
    batch_info,
    cycle_digest,
    event_id,
    node_digest,
)
from creditshare.monitoring._signals import (
    COLUMN_SIGNALS,
    MAX_SIGNALS,
    SIGNAL_RULES,
    Rule,
    Severity,
    Signal,
    SignalChoice,
    SignalRule,
    choices_from_json,
)

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "COLUMN_SIGNALS",
    "MAX_SIGNALS",
    "SIGNAL_RULES",
    "AlertBatch",
    "AlertEvent",
    "Rule",
    "Severity",
    "Signal",
    "SignalChoice",
    "SignalRule",
    "batch_info",
    "choices_from_json",
    "cycle_digest",
    "event_id",
    "node_digest",
]
