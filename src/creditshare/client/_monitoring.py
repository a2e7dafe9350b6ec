"""The SDK's post-loan monitoring calls: subscribe, read alerts (pages or live), webhooks.

A mixin of ``CreditShareClient`` (kept in its own module so the client stays small):
it uses only the client's HTTP plumbing, its signing identity and its alert key.
Subscriptions are signed by the bank and name its alert key's public half; alerts come
back sealed to that key and are opened here, never at the coordinator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from creditshare.client._alerts import Alert, AlertInbox, StoredAlert, read_alerts
from creditshare.client._http import problem_of, segment
from creditshare.client._identity import Identity
from creditshare.client._profile import DEFAULT_MODEL_ID
from creditshare.client._signing import sign_subscription
from creditshare.client._sse import parse_sse
from creditshare.crypto import AlertPrivateKey, PrivateKey
from creditshare.errors import ClientError, InvalidInputError
from creditshare.identity import Uscc
from creditshare.monitoring import Signal, SignalChoice

__all__ = ["MonitoringCalls", "signal_choices"]

#: Alerts one ``GET /v1/alerts`` page asks for.
PAGE_SIZE = 100
#: Wait before reconnecting a dropped alert stream, unless the server says (``retry:``);
#: doubled after each attempt that brought nothing, up to the cap.
RECONNECT_SECONDS = 1.0
RECONNECT_CAP_SECONDS = 30.0
#: A stream silent this long (the coordinator sends keep-alive comments far more often)
#: is taken for a dead connection and reconnected.
STREAM_IDLE_SECONDS = 120.0


def signal_choices(
    signals: Mapping[str, int | None] | Sequence[str],
) -> list[dict[str, Any]]:
    """``{type: threshold or None}`` or ``[type, ...]`` as the canonical signed list
    (validated here, so a typo fails before a round trip, naming the type)."""
    if isinstance(signals, str):
        raise InvalidInputError("signals: give a list of signal types or a mapping, not a string")
    pairs = signals.items() if isinstance(signals, Mapping) else ((s, None) for s in signals)
    choices = [SignalChoice.of(name, threshold) for name, threshold in pairs]
    if len({c.signal for c in choices}) != len(choices):
        raise InvalidInputError("signals name a signal type more than once")
    if not choices:
        raise InvalidInputError("choose at least one signal type")
    return [c.to_json() for c in sorted(choices)]


class MonitoringCalls:
    """Subscriptions, alerts and webhooks (see ``CreditShareClient``)."""

    _http: httpx.Client
    _alert_key: AlertPrivateKey | None
    _key: PrivateKey | None

    # Provided by CreditShareClient.
    def ensure_paillier_key(self) -> str:
        raise NotImplementedError

    def _request(self, method: str, path: str, *, text: bool = False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def signed_post(
        self,
        path: str,
        body: dict[str, Any],
        sign: Callable[[Identity, Mapping[str, Any]], dict[str, str]],
    ) -> Any:
        raise NotImplementedError

    @property
    def alert_key(self) -> AlertPrivateKey:
        if self._alert_key is None:
            raise ClientError(
                "this client has no alert key; pass alert_key= (load_or_create_alert_key())"
            )
        return self._alert_key

    # subscriptions --------------------------------------------------------------------

    def subscribe(
        self,
        uscc: str,
        consent_id: str,
        signals: Mapping[str, int | None] | Sequence[str],
        chains: Sequence[str] | None = None,
        model_id: str | None = None,
    ) -> dict[str, Any]:
        """Watch an enterprise under its ``post_loan_monitoring`` consent for ``signals``
        (``{"court_judgment": 2, "dishonest_debtor": None}`` or a list of types, default
        thresholds). Signed by this client's identity, naming its alert key.

        With ``score_change`` (threshold: points), the bank's registered Paillier key and
        ``model_id`` (default: the one queries use) are signed too: every cycle the
        nodes encrypt their shares of that model's score under that key only, and
        ``alerts()`` decrypts the sum and compares it with the previous cycle's."""
        choices = signal_choices(signals)
        payload: dict[str, Any] = {
            "uscc": str(Uscc.parse(uscc)),
            "consent_id": consent_id,
            "signals": choices,
            "alert_key": self.alert_key.public_key().to_text(),
        }
        if any(c["type"] == Signal.SCORE_CHANGE.value for c in choices):
            payload["model_id"] = model_id or DEFAULT_MODEL_ID
            payload["key_fingerprint"] = self.ensure_paillier_key()
        elif model_id is not None:
            raise InvalidInputError("model_id is for score_change subscriptions only")
        if chains:
            payload["chains"] = sorted(set(chains))
        result: dict[str, Any] = self.signed_post("/v1/subscriptions", payload, sign_subscription)
        return result

    def subscriptions(self, status: str | None = None) -> list[dict[str, Any]]:
        """This bank's subscriptions (``status``: "active" or "ended"; None: all)."""
        params = {"status": status} if status else {}
        result: list[dict[str, Any]] = self._request("GET", "/v1/subscriptions", params=params)
        return result

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/v1/subscriptions/{segment(subscription_id)}"
        )
        return result

    def unsubscribe(self, subscription_id: str) -> dict[str, Any]:
        """End a subscription ("cancelled by the bank", recorded in the ledger)."""
        result: dict[str, Any] = self._request(
            "DELETE", f"/v1/subscriptions/{segment(subscription_id)}"
        )
        return result

    # alerts -----------------------------------------------------------------------------

    def alerts(
        self,
        after: str | None = None,
        follow: bool = False,
        inbox: AlertInbox | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Generator[Alert, None, None]:
        """Every alert stored for this bank after ``after`` (default: the ``inbox``'s
        cursor, else from the start), opened with the alert key, padding dropped, each
        event once (by id, across pages, resends and, with an inbox file, restarts).

        ``follow=False`` pages ``GET /v1/alerts`` until it runs out; ``follow=True``
        reads the live stream (``GET /v1/alerts/stream``) and never ends, reconnecting
        with ``Last-Event-ID`` when the connection drops. A batch that does not open as
        the subscription, node and cycle it is listed with raises ``AlertBatchError``
        naming its cursor. Events a node numbered but that never came are in
        ``inbox.gaps``.
        """
        inbox = inbox if inbox is not None else AlertInbox()
        start = after if after is not None else inbox.cursor
        if start is None:
            inbox.from_start = True
        rows = self._alert_stream(start) if follow else self._alert_pages(start, page_size)
        key = self.alert_key  # fail before the first request without one
        return read_alerts(rows, key, inbox, self._uscc_lookup(), paillier_key=self._paillier)

    def open_alerts(
        self, rows: Iterable[Any], inbox: AlertInbox | None = None
    ) -> Generator[Alert, None, None]:
        """The events in alert rows that came another way: a webhook call's
        ``data.alerts`` (after ``verify_webhook``). Opened and checked like ``alerts()``;
        with the ``inbox`` the webhook receiver keeps, each event once however often
        it is delivered. The inbox's cursor is left alone (calls may come out of order)."""
        key = self.alert_key
        stored = [StoredAlert.from_json(row) for row in rows]
        return read_alerts(
            stored, key, inbox or AlertInbox(), self._uscc_lookup(), False, self._paillier
        )

    def _paillier(self) -> PrivateKey | None:
        """The key score_change scores are read with (None: this client has none)."""
        return self._key

    def _uscc_lookup(self) -> Callable[[str], str]:
        known: dict[str, str] = {}

        def uscc_of(subscription_id: str) -> str:
            if subscription_id not in known:
                known[subscription_id] = str(self.subscription(subscription_id)["uscc"])
            return known[subscription_id]

        return uscc_of

    def _alert_pages(self, after: str | None, page_size: int) -> Iterator[StoredAlert]:
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if after is not None:
                params["after"] = after
            page = self._request("GET", "/v1/alerts", params=params)
            if not isinstance(page, dict) or not isinstance(page.get("alerts"), list):
                raise ClientError("the coordinator sent a malformed alerts page")
            for item in page["alerts"]:
                yield StoredAlert.from_json(item)
            following = page.get("next_cursor")
            if not page["alerts"] or following is None or str(following) == after:
                return
            after = str(following)

    def _alert_stream(self, after: str | None) -> Iterator[StoredAlert]:
        """Rows from the SSE stream, reconnecting (``Last-Event-ID``: the last row taken)
        whenever the connection ends; a refusal (4xx) ends it with ProblemError."""
        last, delay, first = after, RECONNECT_SECONDS, True
        while True:
            headers = {"Accept": "text/event-stream"}
            params: dict[str, str] = {}
            if last is not None and first:
                params["after"] = last
            elif last is not None:
                headers["Last-Event-ID"] = last
            got, server_retry = False, None
            try:
                with self._http.stream(
                    "GET",
                    "/v1/alerts/stream",
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=STREAM_IDLE_SECONDS),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        if response.status_code < 500:
                            raise problem_of(response)
                    else:
                        first = False
                        for event in parse_sse(response.iter_lines()):
                            if event.retry is not None:
                                server_retry = event.retry / 1000
                            if event.event != "alert":
                                continue
                            stored = StoredAlert.from_json(_json(event.data))
                            yield stored
                            last, got = stored.cursor, True
            except httpx.TransportError:
                pass  # dropped or unreachable: reconnect below
            # The server's retry, else 1 s after a connection that brought something,
            # doubling (to a cap) while reconnecting brings nothing.
            delay = (
                server_retry
                if server_retry is not None
                else RECONNECT_SECONDS
                if got
                else min(delay * 2, RECONNECT_CAP_SECONDS)
            )
            time.sleep(delay)

    # webhooks ----------------------------------------------------------------------------

    def set_webhook(self, url: str) -> dict[str, Any]:
        """Deliver this bank's alerts to ``url`` too; ``{url, secret}`` (secret shown once:
        keep it for ``verify_webhook``)."""
        result: dict[str, Any] = self._request("PUT", "/v1/webhook", json={"url": url})
        return result

    def webhook(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/webhook")
        return result

    def remove_webhook(self) -> None:
        self._request("DELETE", "/v1/webhook")

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/webhook/deliveries")
        return result

    # cycles (operator) ------------------------------------------------------------------

    def run_monitoring_cycle(self) -> dict[str, Any]:
        """Run one monitoring cycle now (operators); the cycle's summary."""
        result: dict[str, Any] = self._request("POST", "/v1/monitoring/cycles")
        return result

    def monitoring_cycles(self, limit: int = 20) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request(
            "GET", "/v1/monitoring/cycles", params={"limit": limit}
        )
        return result


def _json(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ClientError("the alert stream sent an alert event that is not JSON") from None
