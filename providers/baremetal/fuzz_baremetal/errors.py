"""Warewulf failures as the typed, one-line errors of :mod:`fuzz.plugin.provider`.

Both back ends (``wwctl`` and the REST API) hand :func:`classify` what Warewulf
said; the words in it (or the HTTP status) decide the type.
"""

from __future__ import annotations

from fuzz.plugin.provider import AuthenticationError, NodeNotFoundError, ProviderError


class NodeExistsError(ProviderError):
    """A node of that name exists already (another create took the machine first)."""


def one_line(text: str) -> str:
    """``text`` on one line, whitespace collapsed."""
    return " ".join(text.split())


def classify(what: str, detail: str, status: int | None = None) -> ProviderError:
    """The typed error for a failed Warewulf call: auth, a missing image/node/overlay, or other."""
    message = f"warewulf: {what} failed: {one_line(detail) or 'no output'}"
    text = detail.lower()
    if status in (401, 403) or "permission denied" in text or "unauthorized" in text:
        return AuthenticationError(message + " (check the credentials and that you may manage "
                                   "Warewulf)")
    if "already exists" in text:
        return NodeExistsError(message)
    if status == 404 or "does not exist" in text or "not found" in text:
        return NodeNotFoundError(message)
    return ProviderError(message)
