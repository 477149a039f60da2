"""The gateway's sign-in page: a form taking the user's token or a one-time login code.

Its paths are under ``/_fuzz/`` on every host the gateway serves (so a subdomain
endpoint's host signs in on itself: its cookie is that host's alone). After signing
in the browser goes back to where it was sent from (``next``, a path on the same host:
anything else goes to ``/``).
"""

from __future__ import annotations

import html
from urllib.parse import quote

PREFIX = "/_fuzz/"
SIGN_IN = "/_fuzz/sign-in"
SIGN_OUT = "/_fuzz/sign-out"


def url_for(target: str) -> str:
    """Where a browser that must sign in first is sent (then back to ``target``)."""
    return f"{SIGN_IN}?next={quote(target, safe='')}"


def safe_next(target: str) -> str:
    """``target`` when it is a path on this host; ``/`` otherwise (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def page(next_target: str, problem: str) -> bytes:
    """The sign-in form (with ``problem`` shown when the last try failed)."""
    error = f'<p class="error">{html.escape(problem)}</p>' if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - fuzz endpoints</title></head>
<body><h1>Sign in to open this endpoint</h1>{error}
<form method="post" action="{SIGN_IN}">
<input type="hidden" name="next" value="{html.escape(next_target)}">
<label>Your fuzz token, or a one-time login code (<code>fuzz iam user code USER</code>)
<input type="password" name="credential" autocomplete="off" autofocus></label>
<button type="submit">Sign in</button></form></body></html>
""".encode()


def signed_out_page() -> bytes:
    """What signing out shows."""
    return b"<!doctype html><html><body><p>Signed out.</p></body></html>\n"
