"""What the provider asks of Warewulf, whichever way it is reached (wwctl or the REST API).

Nodes are read in the shape of ``nodes.conf`` (``profiles``, ``image name``,
``network devices``, ``ipmi``, ``system overlay``, ``tags`` …), as both
``wwctl node list --json`` (4.6.1+) and ``GET /api/nodes/`` return them. The two
back ends are :mod:`fuzz_baremetal.wwctl` and :mod:`fuzz_baremetal.rest`; their
failures become typed errors by :func:`fuzz_baremetal.errors.classify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

PowerState = Literal["on", "off", "unknown"]
NodeFields = Mapping[str, Any]


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
