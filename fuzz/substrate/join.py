"""Joining an orchestrator: the agent registers itself, then keeps registering (heartbeat).

Registration carries the node's name (its address in the cluster), the endpoint
to call it at and the agent's own bearer token. In a TLS cluster the agent has
enrolled first (:mod:`fuzz.substrate.enroll`) and proves each registration with
its certificate; in a plain-text one it carries the join token the node was
created with. The orchestrator reads the node's inventory once, at the first
registration. Failures are printed once per distinct message and retried, so an
agent started before its orchestrator joins as soon as the orchestrator is up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from fuzz.crypto.proof import registration_payload
from fuzz.errors import FuzzError
from fuzz.rpc.client import ClientTls
from fuzz.substrate.enroll import NodeIdentity

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0


@dataclass(frozen=True)
class JoinSettings:
    """Which orchestrator to join, as which node, with which token; ``ca_pem``: over TLS."""

    orchestrator: str  # HOST:PORT, or several replicas' comma-separated
    token: str
    name: str
    advertise: str | None = None
    ca_pem: bytes | None = None


def keep_registered(settings: JoinSettings, endpoint: str, agent_token: str,
                    labels: Mapping[str, str], stop: threading.Event,
                    identity: NodeIdentity | None = None) -> None:
    """Register with the orchestrator every few seconds until ``stop`` is set.

    With ``identity`` (a TLS cluster) each registration is proven with the node's
    certificate instead of carrying the join token.
    """
    from fuzz.clients.orchestrator import OrchestratorClient  # the agent needs it only to join

    advertised = settings.advertise or endpoint
    tls = ClientTls(settings.ca_pem) if settings.ca_pem is not None else None
    client = OrchestratorClient(settings.orchestrator, agent_token, tls=tls)
    last_problem = ""
    try:
        while not stop.is_set():
            try:
                if identity is None:
                    first = client.register_node(settings.name, advertised, agent_token,
                                                 labels, join_token=settings.token)
                else:
                    proof = identity.prove(lambda at: registration_payload(
                        settings.name, advertised, agent_token, labels, at))
                    first = client.register_node(settings.name, advertised, agent_token,
                                                 labels, proof=proof)
                if first:
                    logger.info("joined the orchestrator at %s as %s", settings.orchestrator,
                                settings.name)
                last_problem = ""
            except FuzzError as exc:
                if str(exc) != last_problem:
                    logger.warning("cannot join %s yet: %s", settings.orchestrator, exc)
                    last_problem = str(exc)
                if "," in settings.orchestrator:  # replicas: find the live leader again
                    client.close()
                    client = OrchestratorClient(settings.orchestrator, agent_token, tls=tls)
            stop.wait(HEARTBEAT_INTERVAL)
    finally:
        client.close()
