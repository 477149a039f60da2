"""What the provider asks of Warewulf, whichever way it is reached (wwctl or the REST API).

Nodes are read in the shape of ``nodes.conf`` (``profiles``, ``image name``,
``network devices``, ``ipmi``, ``system overlay``, ``tags`` …), as both
``wwctl node list --json`` (4.6.1+) and ``GET /api/nodes/`` return them. Failures
become the typed errors of :mod:`fuzz.plugin.provider` by :func:`classify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fuzz.plugin.provider import AuthenticationError, NodeNotFoundError, ProviderError

PowerState = Literal["on", "off", "unknown"]
NodeFields = Mapping[str, Any]


class NodeExistsError(ProviderError):
    """A node of that name exists already (another create took the machine first)."""


@dataclass(frozen=True)
class NewNode:
    """A Warewulf node for one machine: its identity, network and BMC, and fuzz's tags."""

    name: str
    profile: str
    network: str
    mac: str
    ip: str | None
    ipmi_address: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class NodeSetup:
    """What makes the node boot into fuzz: its image, the overlay and the bootstrap tags."""

    image: str
    overlay: str
    tags: Mapping[str, str]


class Warewulf(Protocol):
    """The Warewulf operations the provider uses."""

    def list_nodes(self) -> dict[str, NodeFields]:
        """Every node by name, as nodes.conf fields."""

    def add_node(self, node: NewNode) -> None:
        """Add a node; NodeExistsError when the name is taken."""

    def set_node(self, name: str, setup: NodeSetup) -> None:
        """Set the node's image, add the overlay, add the tags."""

    def delete_node(self, name: str) -> None:
        """Delete the node from nodes.conf."""

    def build_overlays(self, name: str) -> None:
        """Build (render) the node's overlays."""

    def power(self, name: str, state: Literal["on", "off"]) -> None:
        """Power the node's machine on or off through its BMC."""

    def power_status(self, nodes: Mapping[str, str]) -> dict[str, PowerState]:
        """Power state by node name; ``nodes`` maps each name to its BMC address."""


def node_tags(fields: NodeFields) -> dict[str, str]:
    """A node's tags (empty when it has none)."""
    tags = fields.get("tags") or {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {}


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
