"""The registration proof: a node's signature over one registration, checked by the orchestrator.

Both sides build the signed bytes with :func:`registration_payload`: the agent signs
them with its node key (:meth:`fuzz.substrate.enroll.NodeIdentity.prove`) and the
orchestrator verifies them against the node's certificate
(:mod:`fuzz.orchestrate.enrollment`). Neither side's code is needed by the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


def registration_payload(name: str, endpoint: str, agent_token: str,
                         labels: Mapping[str, str], signed_at: float) -> bytes:
    """The bytes a node signs to prove a registration is its own (both sides build them)."""
    return json.dumps({"name": name, "endpoint": endpoint, "agent_token": agent_token,
                       "labels": dict(labels), "signed_at": signed_at},
                      sort_keys=True).encode()


@dataclass(frozen=True)
class RegistrationProof:
    """A node's certificate and its signature over one registration."""

    certificate: bytes
    signature: bytes
    signed_at: float
