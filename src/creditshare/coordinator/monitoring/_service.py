"""``Monitoring``: the one object the app holds for post-loan monitoring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from creditshare.coordinator.monitoring._alerts import AlertHub, AlertStore
from creditshare.coordinator.monitoring._cycles import CycleRunner
from creditshare.coordinator.monitoring._subscriptions import Subscriptions
from creditshare.coordinator.monitoring._webhooks import WebhookDispatcher, WebhookStore

if TYPE_CHECKING:
    from creditshare.coordinator._services import Services

__all__ = ["Monitoring"]

log = logging.getLogger("creditshare.coordinator")
#: How often subscriptions whose consent expired (or was revoked by disabling its
#: enterprise) are ended, between cycles too: their status and the ledger say so soon.
_SWEEP_SECONDS = 60.0


class Monitoring:
    """Subscriptions, cycles, alerts and webhooks, and their background tasks."""

    def __init__(self, services: Services, clock: Callable[[], datetime]) -> None:
        settings = services.settings
        self.hub = AlertHub()
        self.subscriptions = Subscriptions(services, clock)
        self.alerts = AlertStore(services.engine)
        self.cycles = CycleRunner(services, self.subscriptions, self.alerts, self.hub, clock)
        self.webhooks = WebhookStore(services.engine, clock, settings.webhook_allowed_networks)
        self.dispatcher = WebhookDispatcher(
            self.webhooks,
            clock,
            max_attempts=settings.webhook_max_attempts,
            initial_backoff=settings.webhook_initial_backoff_seconds,
            max_backoff=settings.webhook_max_backoff_seconds,
            timeout=settings.webhook_timeout_seconds,
        )
        self._interval = settings.monitoring_interval_seconds
        self._poll = min(2.0, settings.webhook_initial_backoff_seconds)
        self._tasks: list[asyncio.Task[None]] = []

    async def _sweeping(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            try:
                await self.subscriptions.sweep()
            except Exception:
                log.exception("ending subscriptions of lapsed consents failed")

    def start(self) -> None:
        """The webhook dispatcher, the sweep of lapsed consents' subscriptions, and the
        cycle loop unless cycles are on demand only."""
        self._tasks.append(asyncio.create_task(self.dispatcher.run(self.hub.wait, self._poll)))
        self._tasks.append(asyncio.create_task(self._sweeping()))
        if self._interval > 0:
            self._tasks.append(asyncio.create_task(self.cycles.loop(self._interval)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
