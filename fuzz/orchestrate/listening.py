"""Binding the orchestrator's HTTP listeners (the endpoint gateway, the web UI) from a
spec's ``HOST:PORT``."""

from __future__ import annotations

import socket


class ListenError(Exception):
    """``HOST:PORT`` could not be bound; the message says why, without the address."""


def listen_on(listen: str, backlog: int) -> socket.socket:
    """A TCP socket listening on ``listen`` (``HOST:PORT``, an IPv6 host in brackets; port 0
    picks one); :class:`ListenError` with the system's reason if it cannot be bound."""
    host, _, port = listen.rpartition(":")
    try:
        return socket.create_server((host.strip("[]"), int(port)), backlog=backlog)
    except (OSError, ValueError) as exc:
        raise ListenError(getattr(exc, "strerror", None) or str(exc)) from None
