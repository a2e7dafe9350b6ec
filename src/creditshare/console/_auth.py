"""Who may use a console: whoever opened the login link it printed, and only by forms
the console itself served.

A console holds a participant's keys and acts with them, so any local user or web page
that could reach its port could otherwise query, grant or disable in that participant's
name. At start it makes a random login token (printed, and written 0600 to
``work_dir/login-url``); ``/login?token=`` trades it for a session cookie (HttpOnly,
SameSite=Strict). Every state-changing request must also carry the session's CSRF token
(a hidden form field, or the ``X-CSRF-Token`` header htmx sends), compared in constant
time, so a page elsewhere cannot post through the user's browser.

The login token lasts as long as the process (it is the link the operator was given);
a session does not: it ends after ``idle`` without a request and at ``lifetime`` in any
case, and ``POST /logout`` ends it at once. Cookies ignore ports, so every console on
one host would share a cookie called the same: each console names its own
(``creditshare_console_<port>_<random>``), and two consoles never log each other out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "COOKIE_PREFIX",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_IDLE",
    "SESSION_LIFETIME",
    "Sessions",
    "cookie_name",
]

COOKIE_PREFIX = "creditshare_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
#: Seconds without a request after which a session ends (the default of the setting).
SESSION_IDLE = 8 * 3600.0
#: Seconds after login at which a session ends however busy it is.
SESSION_LIFETIME = 24 * 3600.0


def cookie_name(port: int) -> str:
    """This console's own session cookie name (decided once, at app creation)."""
    return f"{COOKIE_PREFIX}_{port}_{secrets.token_hex(3)}"


@dataclass
class _Session:
    csrf: str
    started: float
    used: float


@dataclass
class Sessions:
    """The login token and the sessions it opened (in memory: a restart logs out)."""

    login_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    cookie: str = field(default_factory=lambda: cookie_name(0))
    idle: float = SESSION_IDLE
    lifetime: float = SESSION_LIFETIME
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, _Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def login(self, token: str) -> str | None:
        """A new session id for the right token, else None."""
        if not hmac.compare_digest(token.encode(), self.login_token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._prune(now)
            self._sessions[session] = _Session(secrets.token_urlsafe(32), now, now)
        return session

    def csrf_token(self, session: str | None) -> str | None:
        """The CSRF token of a live session (which counts as a use of it); None for an
        unknown or expired one."""
        if not session:
            return None
        now = self.clock()
        with self._lock:
            self._prune(now)
            # Look up by constant-time comparison: the session id is a secret too.
            for known, live in self._sessions.items():
                if hmac.compare_digest(known.encode(), session.encode()):
                    live.used = now
                    return live.csrf
        return None

    def csrf_ok(self, session: str | None, given: str | None) -> bool:
        expected = self.csrf_token(session)
        if not expected or not given:
            return False
        return hmac.compare_digest(expected.encode(), given.encode())

    def logout(self, session: str | None) -> None:
        with self._lock:
            for known in list(self._sessions):
                if session and hmac.compare_digest(known.encode(), session.encode()):
                    del self._sessions[known]

    def __len__(self) -> int:
        with self._lock:
            self._prune(self.clock())
            return len(self._sessions)

    def _prune(self, now: float) -> None:
        """Forget every expired session (the lock is held)."""
        for known, live in list(self._sessions.items()):
            if now - live.used >= self.idle or now - live.started >= self.lifetime:
                del self._sessions[known]
