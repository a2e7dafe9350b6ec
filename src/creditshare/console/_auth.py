"""Who may use a console: whoever opened the login link it printed, and only by forms
the console itself served.

A console holds a participant's keys and acts with them, so any local user or web page
that could reach its port could otherwise query, grant or disable in that participant's
name. At start it makes a random login token (printed, and written 0600 to
``work_dir/login-url``); ``/login?token=`` trades it for a session cookie (HttpOnly,
SameSite=Strict). Every state-changing request must also carry the session's CSRF token
(a hidden form field, or the ``X-CSRF-Token`` header htmx sends), compared in constant
time, so a page elsewhere cannot post through the user's browser.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Sessions"]

COOKIE = "creditshare_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Sessions:
    """The login token and the sessions it opened (in memory: a restart logs out)."""

    login_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _csrf: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def login(self, token: str) -> str | None:
        """A new session id for the right token, else None."""
        if not hmac.compare_digest(token.encode(), self.login_token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._csrf[session] = secrets.token_urlsafe(32)
        return session

    def csrf_token(self, session: str | None) -> str | None:
        """The CSRF token of a live session; None for an unknown one."""
        if not session:
            return None
        with self._lock:
            # Look up by constant-time comparison: the session id is a secret too.
            for known, csrf in self._csrf.items():
                if hmac.compare_digest(known.encode(), session.encode()):
                    return csrf
        return None

    def csrf_ok(self, session: str | None, given: str | None) -> bool:
        expected = self.csrf_token(session)
        if not expected or not given:
            return False
        return hmac.compare_digest(expected.encode(), given.encode())

    def logout(self, session: str | None) -> None:
        with self._lock:
            for known in list(self._csrf):
                if session and hmac.compare_digest(known.encode(), session.encode()):
                    del self._csrf[known]
