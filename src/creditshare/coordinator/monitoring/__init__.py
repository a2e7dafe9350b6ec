"""Post-loan monitoring on the coordinator: subscriptions, cycles, alerts, webhooks.

A room of its own (REVIEW: the coordinator is one flat room near its module limit).
Banks subscribe to enterprises under ``post_loan_monitoring`` consents; cycles ask the
nodes for one fixed-size sealed batch per subscription and store them; banks read
them by cursor, live (server-sent events) or by webhook. The coordinator opens nothing:
it stores and relays sealed bytes only. Modules:

- ``_tables``: the SQLModel tables (migration c0008);
- ``_store``: subscription rows and node registrations;
- ``_nodes``: routing to nodes by the signals they raise; the Watch and Monitor calls;
- ``_subscriptions``: subscribing, ending (bank, revocation, expiry), registering;
- ``_cycles``: the cycle runner and its DB guard; ``_alerts``: stored batches, cursors;
- ``_webhooks``: Standard Webhooks signing, delivery rows, the dispatcher;
- ``_service``: ``Monitoring``, the facade the app holds; ``_routes*``: HTTP (the app
  includes their routers; not imported here, they depend on the app's services).
"""

from creditshare.coordinator.monitoring._service import Monitoring
from creditshare.coordinator.monitoring._webhooks import signature

__all__ = ["Monitoring", "signature"]
