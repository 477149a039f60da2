"""Browsers signed in to the endpoint gateway: opaque cookies standing for a token.

Signing in takes the user's token, or a one-time login code spent for a new token
(:meth:`~fuzz.orchestrate.iam.directory.IamDirectory.login`). The browser gets a
random cookie value that is neither the token nor derived from it; the gateway keeps,
in memory, the cookie's digest and the token, and authenticates that token again at
every request, so a revoked or expired token, or a user's changed groups, take effect
at once. A server restart signs everybody out.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE_NAME = "fuzz_endpoint_session"


@dataclass(frozen=True)
class _Session:
    token: str
    expires: float


class SignIns:
    """The gateway's signed-in browsers, by the digest of their cookie."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.time) -> None:
        """Sessions last ``ttl`` seconds at most."""
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def open(self, token: str, token_expires: float) -> tuple[str, int]:
        """A new session for ``token`` (expiring at ``token_expires``, 0: never): the
        cookie's value and its max-age in seconds."""
        now = self._clock()
        expires = now + self._ttl
        if token_expires:
            expires = min(expires, token_expires)
        value = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[_digest(value)] = _Session(token, expires)
        return value, max(int(expires - now), 0)

    def token(self, value: str) -> str | None:
        """The token of the session a cookie ``value`` stands for (None: none, or expired)."""
        with self._lock:
            session = self._sessions.get(_digest(value))
        if session is None or session.expires <= self._clock():
            return None
        return session.token

    def close(self, value: str) -> None:
        """End the session of cookie ``value`` (signing out)."""
        with self._lock:
            self._sessions.pop(_digest(value), None)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def set_cookie(value: str, max_age: int) -> bytes:
    """The ``Set-Cookie`` value of a session: Secure, HttpOnly, SameSite=Lax, host-only."""
    return (f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; "
            "SameSite=Lax").encode()


def cookie_value(header: bytes) -> str | None:
    """The session cookie's value in a ``Cookie`` header (None: absent)."""
    for part in header.decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and value:
            return value
    return None


def without_session_cookie(header: bytes) -> bytes:
    """A ``Cookie`` header less the session cookie (the service never sees it)."""
    kept = [part.strip() for part in header.decode("latin-1").split(";")
            if part.strip() and part.strip().partition("=")[0] != COOKIE_NAME]
    return "; ".join(kept).encode("latin-1")
