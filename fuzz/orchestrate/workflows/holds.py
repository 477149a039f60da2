"""What the attempts in flight hold on each node, kept as their plans come and go.

A scheduling round summed every attempt in flight into each node's use, and made
every node's view from it: at thousands of nodes and attempts that was most of a
round, whatever it placed. Each workflow's attempts (its :class:`AttemptPlans`) tell
one :class:`NodeHolds` as a plan is made, replaced or dropped, so the use of a node
is known without a walk, and the round asks only for the nodes that changed
(:meth:`NodeHolds.take_changed`).
"""

from __future__ import annotations

from collections import UserDict

from fuzz.orchestrate.cluster.nodes import NodeUse
from fuzz.orchestrate.workflows.tasks import LaunchPlan
from fuzz.resources import ResourceRequest


class NodeHolds:
    """The resource requests of the attempts in flight, by node (under the runner's lock)."""

    def __init__(self) -> None:
        """Nothing held."""
        self._held: dict[str, list[ResourceRequest]] = {}
        self._changed: set[str] = set()

    def hold(self, plan: LaunchPlan) -> None:
        """``plan``'s attempt holds its request on each of its nodes."""
        for node in plan.nodes:
            self._held.setdefault(node, []).append(plan.request)
            self._changed.add(node)

    def release(self, plan: LaunchPlan) -> None:
        """``plan``'s attempt holds nothing any more."""
        for node in plan.nodes:
            held = self._held.get(node)
            if held is None:
                continue
            held.remove(plan.request)
            if not held:
                del self._held[node]
            self._changed.add(node)

    def use(self, node: str) -> NodeUse:
        """What the attempts in flight hold on ``node``."""
        held = self._held.get(node)
        return NodeUse.holding(held) if held else NodeUse()

    def used(self) -> dict[str, NodeUse]:
        """The use of every node something is held on."""
        return {node: NodeUse.holding(held) for node, held in self._held.items()}

    def take_changed(self) -> set[str]:
        """The nodes whose use changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed


class AttemptPlans(UserDict[str, LaunchPlan]):
    """One workflow's attempts in flight, by task key, telling a :class:`NodeHolds` (once
    :meth:`attach` ed) what they hold."""

    holds: NodeHolds | None = None

    def attach(self, holds: NodeHolds) -> None:
        """Tell ``holds`` of these plans, and of every change from now on."""
        self.holds = holds
        for plan in self.data.values():
            holds.hold(plan)

    def detach(self) -> None:
        """These plans hold nothing any more (their workflow is no longer run)."""
        if self.holds is not None:
            for plan in self.data.values():
                self.holds.release(plan)
        self.holds = None

    def __setitem__(self, key: str, plan: LaunchPlan) -> None:
        """Make (or replace) task ``key``'s plan."""
        if self.holds is not None:
            old = self.data.get(key)
            if old is not None:
                self.holds.release(old)
            self.holds.hold(plan)
        self.data[key] = plan

    def __delitem__(self, key: str) -> None:
        """Drop task ``key``'s plan (its attempt ended)."""
        plan = self.data.pop(key)
        if self.holds is not None:
            self.holds.release(plan)
