"""Engine unit tests in memory: desired state, refresh and plan are pure functions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fuzz.engine.desired import desired_nodes
from fuzz.engine.model import Action, Plan, RecordedNode, State, client_token
from fuzz.engine.planner import address_sort_key, make_plan
from fuzz.engine.refresh import refresh
from fuzz.errors import ConfigError
from fuzz.plugin.provider import NodeObservation
from fuzz.spec.cluster import ClusterSpec


def spec(**pools: Any) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {"version": 1, "cluster": "c1", "providers": {"local": {}, "cloud": {"kind": "aws"}},
         "pools": pools}
    )


def recorded(state: State, desired: dict[str, Any]) -> State:
    """Record every desired node as created, with provider id = address."""
    for address, node in desired.items():
        state.resources[address] = RecordedNode(
            address, node.pool, node.provider, node.kind, "created", 1,
            client_token(state.lineage, address, 1), provider_id=f"id-{address}",
            offering=node.offering, attributes=dict(node.attributes), labels=dict(node.labels),
        )
    return state


def observe(state: State, skip: set[str] = frozenset(), gone: set[str] = frozenset()) -> dict[
    str, list[NodeObservation]
]:
    seen: dict[str, list[NodeObservation]] = {"local": [], "cloud": []}
    for address, node in state.resources.items():
        if address in skip:
            continue
        seen[node.provider].append(NodeObservation(
            node.provider_id or "?", address, node.client_token,
            "gone" if address in gone else "running",
        ))
    return seen


KINDS = {"local": "local", "cloud": "aws"}


def test_desired_nodes_have_stable_addresses_and_start_at_pool_min() -> None:
    s = spec(cpu={"provider": "local", "min": 2, "max": 4, "labels": {"a": "b"}},
             metal={"provider": "local", "nodes": [{"name": "n01", "mac": "aa"}]})
    assert list(desired_nodes(s)) == ["pool.cpu.node[0]", "pool.cpu.node[1]",
                                      "pool.metal.node[n01]"]
    metal = desired_nodes(s)["pool.metal.node[n01]"]
    assert metal.attributes == {"name": "n01", "mac": "aa"}
    assert desired_nodes(s)["pool.cpu.node[0]"].labels == {"a": "b"}
    assert desired_nodes(s)["pool.cpu.node[0]"].attributes == {}


def test_a_host_network_pool_labels_its_nodes_for_their_agents() -> None:
    s = spec(hpc={"provider": "local", "min": 1, "network": "host", "labels": {"a": "b"}},
             cpu={"provider": "local", "min": 1})
    assert desired_nodes(s)["pool.hpc.node[0]"].labels == {"a": "b", "fuzz:network": "host"}
    assert desired_nodes(s)["pool.cpu.node[0]"].labels == {}


def _members(state: State, pool: str) -> dict[str, str | None]:
    return {a: n.offering for a, n in state.resources.items() if n.pool == pool}


def test_without_orchestrator_input_the_recorded_members_stay_within_min_and_max() -> None:
    s = spec(gpu={"provider": "cloud", "offerings": ["g4", "g5"], "min": 3, "max": 4})
    state = State.new("c1")
    before = spec(gpu={"provider": "cloud", "offerings": ["g4", "g5"], "max": 4})
    added_by_orchestrator = desired_nodes(before, membership={"gpu": {
        "pool.gpu.node[0]": "g5", "pool.gpu.node[2]": "g4"}})
    state = recorded(state, added_by_orchestrator)
    desired = desired_nodes(s, state.resources)
    assert {a: n.offering for a, n in desired.items()} == {
        "pool.gpu.node[0]": "g5", "pool.gpu.node[2]": "g4", "pool.gpu.node[1]": "g4"}, (
        "topped up to min at the lowest free index with the first offering; g5 kept")
    plan = make_plan(desired, refresh(state, observe(state), KINDS))
    assert [(c.action, c.address) for c in plan.changes] == [
        (Action.CREATE, "pool.gpu.node[1]")]

    six = recorded(State.new("c1"), desired_nodes(s, membership={"gpu": {
        f"pool.gpu.node[{i}]": "g5" for i in range(4)}}))
    for i in (4, 9):
        address = f"pool.gpu.node[{i}]"
        six.resources[address] = replace(six.resources["pool.gpu.node[0]"], address=address,
                                         provider_id=f"id-{address}")
    plan = make_plan(desired_nodes(s, six.resources), refresh(six, observe(six), KINDS))
    assert [(c.action, c.address) for c in plan.changes] == [
        (Action.DELETE, "pool.gpu.node[4]"), (Action.DELETE, "pool.gpu.node[9]")], (
        "trimmed to max, highest indexes first")


def test_the_orchestrators_membership_adds_and_drains_without_replacing() -> None:
    s = spec(gpu={"provider": "cloud", "offerings": ["g4", "g5"], "max": 5, "spot": True})
    state = recorded(State.new("c1"), desired_nodes(s, membership={"gpu": {
        "pool.gpu.node[0]": "g5", "pool.gpu.node[1]": "g5"}}))
    assert state.resources["pool.gpu.node[0]"].attributes == {"spot": True}
    membership = {"gpu": {**_members(state, "gpu"), "pool.gpu.node[2]": "g4"}}
    del membership["gpu"]["pool.gpu.node[0]"]
    plan = make_plan(desired_nodes(s, state.resources, membership),
                     refresh(state, observe(state), KINDS))
    assert [(c.action, c.address) for c in plan.changes] == [
        (Action.DELETE, "pool.gpu.node[0]"), (Action.CREATE, "pool.gpu.node[2]")]
    assert plan.changes[1].after is not None and plan.changes[1].after.offering == "g4"
    assert not make_plan(desired_nodes(s, state.resources),
                         refresh(state, observe(state), KINDS)).has_changes, (
        "g5 is not the first offering, yet the recorded members stay as they are")


def test_empty_state_plans_one_create_per_node_in_natural_order() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 12}))
    plan = make_plan(desired, refresh(State.new("c1"), {}, KINDS))
    assert [c.action for c in plan.changes] == [Action.CREATE] * 12
    assert plan.changes[2].address == "pool.cpu.node[2]"
    assert plan.changes[10].address == "pool.cpu.node[10]"
    assert {c.generation for c in plan.changes} == {1}
    assert plan.counts()["create"] == 12


def test_matching_state_plans_nothing() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 3}))
    state = recorded(State.new("c1"), desired)
    plan = make_plan(desired, refresh(state, observe(state), KINDS))
    assert not plan.has_changes
    assert (plan.lineage, plan.serial) == (state.lineage, state.serial)


def test_scale_down_deletes_the_highest_addresses() -> None:
    big = desired_nodes(spec(cpu={"provider": "local", "min": 5}))
    state = recorded(State.new("c1"), big)
    small = desired_nodes(spec(cpu={"provider": "local", "min": 3}))
    plan = make_plan(small, refresh(state, observe(state), KINDS))
    assert [(c.action, c.address) for c in plan.changes] == [
        (Action.DELETE, "pool.cpu.node[3]"), (Action.DELETE, "pool.cpu.node[4]")]
    assert "no longer wanted by pool cpu" in plan.changes[0].reason


def test_gone_node_is_recreated_with_a_new_generation() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 3}))
    state = recorded(State.new("c1"), desired)
    refreshed = refresh(state, observe(state, skip={"pool.cpu.node[1]"}), KINDS)
    assert refreshed.gone == {"pool.cpu.node[1]"}
    plan = make_plan(desired, refreshed)
    [change] = plan.changes
    assert (change.action, change.address, change.generation) == (
        Action.CREATE, "pool.cpu.node[1]", 2)
    assert "drift" in change.reason
    reported_gone = refresh(state, observe(state, gone={"pool.cpu.node[2]"}), KINDS)
    assert reported_gone.gone == {"pool.cpu.node[2]"}


def test_pending_create_is_adopted_when_the_provider_has_its_token() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 1}))
    state = State.new("c1")
    token = client_token(state.lineage, "pool.cpu.node[0]", 1)
    state.resources["pool.cpu.node[0]"] = RecordedNode(
        "pool.cpu.node[0]", "cpu", "local", "local", "pending_create", 1, token)
    seen = {"local": [NodeObservation("p-1", "pool.cpu.node[0]", token, "running", "h:1")]}
    refreshed = refresh(state, seen, KINDS)
    assert refreshed.adopted == {"pool.cpu.node[0]"}
    node = refreshed.state.resources["pool.cpu.node[0]"]
    assert (node.status, node.provider_id, node.observed["endpoint"]) == ("created", "p-1", "h:1")
    assert not make_plan(desired, refreshed).has_changes
    assert state.resources["pool.cpu.node[0]"].status == "pending_create", "input not mutated"


def test_pending_create_not_found_is_resumed_with_the_same_token() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 1}))
    state = State.new("c1")
    state.resources["pool.cpu.node[0]"] = RecordedNode(
        "pool.cpu.node[0]", "cpu", "local", "local", "pending_create", 4,
        client_token(state.lineage, "pool.cpu.node[0]", 4))
    plan = make_plan(desired, refresh(state, {"local": []}, KINDS))
    [change] = plan.changes
    assert (change.action, change.generation) == (Action.CREATE, 4)
    assert "resuming" in change.reason


def test_orphans_are_deleted_and_labels_update_in_place() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 1, "labels": {"x": "2"}}))
    state = recorded(State.new("c1"), desired_nodes(
        spec(cpu={"provider": "local", "min": 1, "labels": {"x": "1", "old": "y"}})))
    seen = observe(state)
    seen["cloud"].append(NodeObservation("i-123", "pool.gpu.node[0]", "tok", "running"))
    seen["cloud"].append(NodeObservation("i-dead", "pool.gpu.node[1]", "tok2", "gone"))
    plan = make_plan(desired, refresh(state, seen, KINDS))
    actions = {(c.action, c.address, c.orphan) for c in plan.changes}
    assert actions == {(Action.UPDATE, "pool.cpu.node[0]", False),
                       (Action.DELETE, "pool.gpu.node[0]", True)}
    update = next(c for c in plan.changes if c.action is Action.UPDATE)
    assert update.reason == "labels change: +x=2, -old"
    orphan = next(c for c in plan.changes if c.orphan)
    assert orphan.before is not None and orphan.before.kind == "aws"


def test_offering_change_forces_replacement_and_replace_flag_works() -> None:
    old = desired_nodes(spec(gpu={"provider": "cloud", "offerings": ["g4"], "min": 2}))
    state = recorded(State.new("c1"), old)
    new = desired_nodes(spec(gpu={"provider": "cloud", "offerings": ["g5"], "min": 2}))
    plan = make_plan(new, refresh(state, observe(state), KINDS))
    assert [c.action for c in plan.changes] == [Action.REPLACE, Action.REPLACE]
    assert plan.changes[0].reason == "offering g4 -> g5 (forces replacement)"
    assert plan.changes[0].generation == 2
    forced = make_plan(old, refresh(state, observe(state), KINDS), replace={"pool.gpu.node[1]"})
    assert [(c.action, c.address) for c in forced.changes] == [
        (Action.REPLACE, "pool.gpu.node[1]")]
    with pytest.raises(ConfigError, match=r"--replace pool.gpu.node\[7\]: no such resource"):
        make_plan(old, refresh(state, {}, KINDS), replace={"pool.gpu.node[7]"})


def test_targets_limit_the_plan_and_destroy_deletes_everything() -> None:
    desired = desired_nodes(spec(a={"provider": "local", "min": 2}, b={"provider": "local",
                                                                          "min": 2}))
    plan = make_plan(desired, refresh(State.new("c1"), {}, KINDS), targets={"pool.b"})
    assert [c.address for c in plan.changes] == ["pool.b.node[0]", "pool.b.node[1]"]
    with pytest.raises(ConfigError, match=r"--target pool\.zz"):
        make_plan(desired, refresh(State.new("c1"), {}, KINDS), targets={"pool.zz"})
    state = recorded(State.new("c1"), desired)
    destroy = make_plan(desired, refresh(state, observe(state), KINDS), destroy=True)
    assert [c.action for c in destroy.changes] == [Action.DELETE] * 4
    assert {c.reason for c in destroy.changes} == {"destroy"}


def test_plan_json_round_trip() -> None:
    desired = desired_nodes(spec(cpu={"provider": "local", "min": 2}))
    state = recorded(State.new("c1"), desired_nodes(spec(cpu={"provider": "local", "min": 3})))
    state.serial = 7
    plan = make_plan(desired, refresh(state, {}, KINDS))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert plan.to_json()["summary"] == {"create": 0, "update": 0, "replace": 0, "delete": 1}


def test_state_json_round_trip_and_client_tokens() -> None:
    state = recorded(State.new("c1"), desired_nodes(spec(cpu={"provider": "local", "min": 2})))
    again = State.from_json(state.to_json())
    assert again.to_json() == state.to_json()
    assert client_token("L", "a", 1) == client_token("L", "a", 1)
    assert client_token("L", "a", 1) != client_token("L", "a", 2)
    assert client_token("L", "a", 1) != client_token("M", "a", 1)
    changed = replace(state.resources["pool.cpu.node[0]"], labels={"k": "v"})
    assert changed.to_json()["labels"] == {"k": "v"}


def test_address_sort_key_orders_numbers_naturally() -> None:
    addresses = ["pool.a.node[10]", "pool.a.node[9]", "pool.a.node[n01]", "pool.0.x"]
    assert sorted(addresses, key=address_sort_key) == [
        "pool.0.x", "pool.a.node[n01]", "pool.a.node[9]", "pool.a.node[10]"]
