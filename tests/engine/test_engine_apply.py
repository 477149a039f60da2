"""Engine apply in memory: intent recorded before creates, crash recovery, parallelism."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fuzz.engine.apply import ApplyEvent, apply_plan
from fuzz.engine.desired import desired_nodes
from fuzz.engine.graph import run_graph
from fuzz.engine.model import Action, DesiredNode, RecordedNode, State
from fuzz.engine.planner import make_plan
from fuzz.engine.refresh import refresh
from fuzz.errors import StalePlanError
from fuzz.plugin.provider import CapacityUnavailableError, NodeObservation
from fuzz.spec.cluster import ClusterSpec

KINDS = {"local": "local"}


class MemoryProvider:
    """An in-memory provider that honours client tokens, for pure engine tests."""

    def __init__(self, fail_on: set[str] = frozenset(), delay: float = 0.0) -> None:
        self.nodes: dict[str, NodeObservation] = {}
        self.fail_on = set(fail_on)
        self.delay = delay
        self.creates = 0
        self.active = 0
        self.peak = 0
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            if node.address in self.fail_on:
                raise CapacityUnavailableError(f"no capacity for {node.address}")
            with self.lock:
                self.creates += 1
                for obs in self.nodes.values():
                    if obs.client_token == token:
                        return obs
                obs = NodeObservation(f"n-{self.creates}", node.address, token, "running")
                self.nodes[obs.provider_id] = obs
                return obs
        finally:
            with self.lock:
                self.active -= 1

    def delete(self, record: RecordedNode) -> None:
        with self.lock:
            self.deleted.append(record.provider_id or "")
            self.nodes.pop(record.provider_id or "", None)

    def observations(self) -> dict[str, list[NodeObservation]]:
        return {"local": list(self.nodes.values())}


class MemoryStore:
    """Persists by deep-copying through JSON, as a backend would, and counts writes."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def persist(self, state: State) -> State:
        state = State.from_json(state.to_json())
        state.serial += 1
        self.saved.append(state.to_json())
        return state


def cluster(count: int) -> dict[str, DesiredNode]:
    spec = ClusterSpec.model_validate({"version": 1, "cluster": "c", "providers": {"local": {}},
                                       "pools": {"cpu": {"provider": "local", "min": count}}})
    return desired_nodes(spec)


def test_apply_records_intent_before_each_create_and_the_outcome_after() -> None:
    provider, store = MemoryProvider(), MemoryStore()
    desired = cluster(3)
    state = State.new("c")
    plan = make_plan(desired, refresh(state, {}, KINDS))
    events: list[ApplyEvent] = []
    result = apply_plan(plan, state, provider, store.persist, on_event=events.append)
    assert sorted(result.succeeded) == sorted(desired)
    assert result.state.serial == 6 and len(store.saved) == 6
    assert all(r.status == "created" for r in result.state.resources.values())
    first = store.saved[0]["resources"]
    assert [r["status"] for r in first.values()] == ["pending_create"]
    assert [e.phase for e in events].count("done") == 3
    assert not make_plan(desired, refresh(result.state, provider.observations(), KINDS)).changes


def test_a_crash_after_create_is_adopted_not_duplicated() -> None:
    provider, store = MemoryProvider(), MemoryStore()
    desired = cluster(4)
    state = State.new("c")
    plan = make_plan(desired, refresh(state, {}, KINDS))

    def crash_after_create(saved: State) -> State:
        # Let the pending records through; "crash" when the first outcome is persisted.
        if any(r.status == "created" for r in saved.resources.values()):
            raise KeyboardInterrupt
        return store.persist(saved)

    apply_plan(plan, state, provider, crash_after_create, parallelism=1)
    crashed = State.from_json(store.saved[-1])
    assert [r.status for r in crashed.resources.values()] == ["pending_create"]
    assert len(provider.nodes) == 1
    refreshed = refresh(crashed, provider.observations(), KINDS)
    assert len(refreshed.adopted) == 1
    second = make_plan(desired, refreshed)
    assert len(second.changes) == 3
    result = apply_plan(second, refreshed.state, provider, store.persist)
    assert not result.failed
    assert len(provider.nodes) == 4
    assert len(result.state.resources) == 4


def test_failures_are_reported_and_do_not_stop_independent_changes() -> None:
    provider, store = MemoryProvider(fail_on={"pool.cpu.node[1]"}), MemoryStore()
    state = State.new("c")
    plan = make_plan(cluster(3), refresh(state, {}, KINDS))
    result = apply_plan(plan, state, provider, store.persist)
    assert result.failed == {"pool.cpu.node[1]": "no capacity for pool.cpu.node[1]"}
    assert len(result.succeeded) == 2
    assert result.state.resources["pool.cpu.node[1]"].status == "pending_create"


def test_parallelism_is_bounded() -> None:
    provider, store = MemoryProvider(delay=0.05), MemoryStore()
    state = State.new("c")
    plan = make_plan(cluster(12), refresh(state, {}, KINDS))
    apply_plan(plan, state, provider, store.persist, parallelism=3)
    assert provider.peak == 3
    assert len(provider.nodes) == 12


def test_stale_plan_is_refused() -> None:
    provider, store = MemoryProvider(), MemoryStore()
    state = State.new("c")
    plan = make_plan(cluster(1), refresh(state, {}, KINDS))
    state.serial = 3
    with pytest.raises(StalePlanError, match="plan is stale: it was made at state serial 0"):
        apply_plan(plan, state, provider, store.persist)
    with pytest.raises(StalePlanError, match="lineage"):
        apply_plan(plan, State.new("c"), provider, store.persist)


def test_replace_and_scale_down_delete_before_creating() -> None:
    provider, store = MemoryProvider(), MemoryStore()
    state = State.new("c")
    result = apply_plan(make_plan(cluster(3), refresh(state, {}, KINDS)), state, provider,
                        store.persist)
    plan = make_plan(cluster(2), refresh(result.state, provider.observations(), KINDS),
                     replace={"pool.cpu.node[0]"})
    assert {c.action for c in plan.changes} == {Action.DELETE, Action.REPLACE}
    order: list[tuple[str, str]] = []
    apply_plan(plan, result.state, provider, store.persist,
               on_event=lambda e: order.append((e.address, e.phase)))
    assert order.index(("pool.cpu.node[2]", "done")) < order.index(("pool.cpu.node[0]", "start"))
    assert len(provider.nodes) == 2


def test_graph_skips_dependents_of_failures_and_honours_cancel() -> None:
    ran: list[str] = []

    def ok(name: str) -> Any:
        return lambda: ran.append(name)

    def boom() -> None:
        raise RuntimeError("boom")

    result = run_graph({"a": boom, "b": ok("b"), "c": ok("c")}, {"b": {"a"}}, 2)
    assert result.skipped == ["b"] and ran == ["c"] and "a" in result.failed
    cancel = threading.Event()
    cancel.set()
    assert run_graph({"x": ok("x")}, {}, 1, cancel).skipped == ["x"]


def test_recreating_a_gone_node_first_removes_its_remains() -> None:
    provider, store = MemoryProvider(), MemoryStore()
    state = State.new("c")
    first = apply_plan(make_plan(cluster(2), refresh(state, {}, KINDS)), state, provider,
                       store.persist)
    old = first.state.resources["pool.cpu.node[1]"]
    provider.nodes[old.provider_id or ""] = NodeObservation(
        old.provider_id or "", old.address, old.client_token, "gone")
    plan = make_plan(cluster(2), refresh(first.state, provider.observations(), KINDS))
    [change] = plan.changes
    assert (change.action, change.generation) == (Action.CREATE, 2)
    result = apply_plan(plan, first.state, provider, store.persist)
    assert provider.deleted == [old.provider_id]
    assert result.state.resources["pool.cpu.node[1]"].generation == 2
