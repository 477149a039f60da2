"""The PostgreSQL URL of ``orchestrator.store``: which schemes, and no password in it."""

from __future__ import annotations

import urllib.parse

SCHEMES = ("postgres", "postgresql")
PASSWORD_REFUSED = ("a password in the store's URL is refused: put it in password_file, "
                    "PGPASSWORD or ~/.pgpass")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name the orchestrator's PostgreSQL store (None: it can)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in SCHEMES or parts.path in ("", "/"):  # no host: libpq's socket
        return f"{url!r} is not a postgres://[USER@]HOST[:PORT]/DATABASE URL"
    if parts.password is not None or "password" in urllib.parse.parse_qs(parts.query):
        return PASSWORD_REFUSED
    return None
