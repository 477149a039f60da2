"""Joining an orchestrator: the agent registers itself, then keeps registering (heartbeat).

Registration carries the node's name (its address in the cluster), the endpoint
to call it at, the agent's own bearer token, and the join token the node was
created with. The orchestrator reads the node's inventory once, at the first
registration. Failures are printed once per distinct message and retried, so an
agent started before its orchestrator joins as soon as the orchestrator is up.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from fuzz.errors import FuzzError

HEARTBEAT_INTERVAL = 5.0


@dataclass(frozen=True)
class JoinSettings:
    """Which orchestrator to join, as which node, with which token."""

    orchestrator: str
    token: str
    name: str
    advertise: str | None = None
    ca_pem: bytes | None = None


def keep_registered(settings: JoinSettings, endpoint: str, agent_token: str,
                    labels: Mapping[str, str], stop: threading.Event) -> None:
    """Register with the orchestrator every few seconds until ``stop`` is set."""
    from fuzz.orchestrate.client import OrchestratorClient  # the agent needs it only to join

    client = OrchestratorClient(settings.orchestrator, agent_token, ca_pem=settings.ca_pem)
    last_problem = ""
    try:
        while not stop.is_set():
            try:
                if client.register_node(settings.name, settings.advertise or endpoint,
                                        agent_token, settings.token, labels):
                    print(f"joined the orchestrator at {settings.orchestrator} as "
                          f"{settings.name}", file=sys.stderr, flush=True)
                last_problem = ""
            except FuzzError as exc:
                if str(exc) != last_problem:
                    print(f"cannot join {settings.orchestrator} yet: {exc}", file=sys.stderr,
                          flush=True)
                    last_problem = str(exc)
            stop.wait(HEARTBEAT_INTERVAL)
    finally:
        client.close()
