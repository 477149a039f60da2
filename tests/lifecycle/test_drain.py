"""Drain before delete (:mod:`fuzz.lifecycle.drain`): the order of marks, waits, stops and
deletes, with the orchestrator played by a recording drainer and a clock of its own.

The end-to-end behaviour (real orchestrator, agents and containers) is in
``tests/e2e/test_drain_e2e.py``; this pins the decisions that are slow to reach there:
a drift recreate is not drained, an unreachable node is not waited for, a node whose
delete failed takes work again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

import pytest

from fuzz.engine.model import Action, Change, DesiredNode, Plan, RecordedNode
from fuzz.errors import FuzzError
from fuzz.lifecycle.drain import (
    DrainEvent,
    DrainingOperations,
    DrainSettings,
    NodeTask,
    NodeWork,
    nodes_to_drain,
)
from fuzz.plugin.provider import NodeObservation

TASK = NodeTask("wf", "alice", "job", "job", "RUNNING")


@dataclass
class Orchestrator:
    """Records what draining asked; a node's tasks end at a given time (None: never)."""

    now: float = 0.0
    ends: dict[str, float | None] = field(default_factory=dict)
    state: str = "READY"
    calls: list[tuple[str, str]] = field(default_factory=list)

    def mark(self, addresses: Collection[str], action: Literal["drain", "uncordon"]) -> None:
        self.calls += [(action, address) for address in addresses]

    def work(self, addresses: Collection[str]) -> dict[str, NodeWork]:
        return {a: NodeWork(self.state, (TASK,) if self._running(a) else ()) for a in addresses}

    def _running(self, address: str) -> bool:
        if address not in self.ends:
            return False
        end = self.ends[address]
        return end is None or self.now < end

    def evict(self, address: str, reason: str) -> None:
        self.calls.append(("evict", address))
        self.ends[address] = self.now + 2  # the stopped task takes its grace to end

    def forget(self, address: str) -> None:
        self.calls.append(("forget", address))

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Provider:
    """The providers' delete, recorded (it fails for the addresses in ``broken``)."""

    calls: list[tuple[str, str]]
    broken: set[str] = field(default_factory=set)

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        raise AssertionError("no create in these plans")

    def delete(self, record: RecordedNode) -> None:
        if record.address in self.broken:
            raise FuzzError("the provider said no")
        self.calls.append(("delete", record.address))


def node(address: str) -> RecordedNode:
    return RecordedNode(address, "cpu", "local", "local", "created", 1, "token", "id")


def plan(*changes: tuple[str, Action]) -> Plan:
    return Plan("lineage", 1, tuple(Change(address, action, "why", before=node(address))
                                     for address, action in changes))


def settings(orchestrator: Orchestrator, events: list[DrainEvent]) -> DrainSettings:
    return DrainSettings(orchestrator, lambda record: 30.0, events.append,
                         clock=lambda: orchestrator.now, sleep=orchestrator.sleep)


def test_nodes_are_marked_first_and_each_delete_waits_for_its_tasks() -> None:
    orchestrator = Orchestrator(ends={"a": 5.0})
    events: list[DrainEvent] = []
    the_plan = plan(("a", Action.DELETE), ("b", Action.REPLACE), ("c", Action.CREATE))
    assert nodes_to_drain(the_plan) == ["a", "b"]  # a drift recreate's node is gone
    provider = Provider(orchestrator.calls)
    with DrainingOperations(provider, settings(orchestrator, events),
                            nodes_to_drain(the_plan)) as operations:
        operations.delete(node("a"))
        operations.delete(node("c"))  # not drained: passed through
    assert orchestrator.calls == [("drain", "a"), ("drain", "b"), ("delete", "a"),
                                  ("forget", "a"), ("delete", "c"), ("uncordon", "b")]
    assert orchestrator.now == 6.0  # deleted at the first look after its task ended (5 s)
    assert [e.phase for e in events] == ["waiting", "drained"]
    assert events[0].describe() == ("draining a: 1 task(s) still running: alice/wf job "
                                    "(RUNNING); waiting up to 30s more")


def test_past_the_timeout_the_tasks_are_stopped_then_the_node_goes() -> None:
    orchestrator = Orchestrator(ends={"a": None})
    events: list[DrainEvent] = []
    with DrainingOperations(Provider(orchestrator.calls), settings(orchestrator, events),
                            ["a"]) as operations:
        operations.delete(node("a"))
    assert orchestrator.calls == [("drain", "a"), ("evict", "a"), ("delete", "a"),
                                  ("forget", "a")]
    assert orchestrator.now == 32.0  # 30 s of drain timeout, 2 s for the stop
    assert [e.phase for e in events][-2:] == ["stopping", "drained"]


def test_an_unreachable_node_is_not_waited_for() -> None:
    orchestrator = Orchestrator(ends={"a": None}, state="UNREACHABLE")
    with DrainingOperations(Provider(orchestrator.calls), settings(orchestrator, []),
                            ["a"]) as operations:
        operations.delete(node("a"))
    assert orchestrator.calls[:2] == [("drain", "a"), ("evict", "a")]
    assert orchestrator.now == 2.0


def test_a_node_whose_delete_failed_takes_work_again() -> None:
    orchestrator = Orchestrator()
    provider = Provider(orchestrator.calls, broken={"a"})
    with pytest.raises(FuzzError), DrainingOperations(
            provider, settings(orchestrator, []), ["a"]) as operations:
        operations.delete(node("a"))
    assert orchestrator.calls == [("drain", "a"), ("uncordon", "a")]


def test_a_mark_that_cannot_be_taken_away_is_reported_not_raised() -> None:
    orchestrator = Orchestrator()
    events: list[DrainEvent] = []

    def gone(addresses: Collection[str], action: Literal["drain", "uncordon"]) -> None:
        if action == "uncordon":
            raise FuzzError("cannot reach the orchestrator")

    orchestrator.mark = gone  # type: ignore[method-assign]
    with DrainingOperations(Provider(orchestrator.calls), settings(orchestrator, events),
                            ["a"]):
        pass  # the apply failed before deleting a
    assert [e.describe() for e in events] == [
        "a was not deleted and stays cordoned (cannot reach the orchestrator): "
        "fuzz node uncordon a lets it take work again"]
