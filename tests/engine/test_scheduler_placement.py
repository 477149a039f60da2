"""Tests for :mod:`fuzz.scheduler.placement`: hand-written cases and seeded random properties."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

import pytest

from fuzz.resources import NodeCapacity, ResourceRequest
from fuzz.scheduler.placement import (
    RESERVE_AFTER_ROUNDS,
    NodeView,
    PendingTask,
    Placement,
    Rooms,
    fits_ever,
    place,
)

GiB = 1024**3
GPU = "nvidia.com/gpu"


def node(
    name: str, cores: int, memory_gib: int = 64, gpus: int = 0, *,
    used_cores: int = 0, used_memory_gib: int = 0, leases: int = 0, schedulable: bool = True,
) -> NodeView:
    """A node of ``cores``/``memory_gib``/``gpus`` with some of it already leased."""
    devices = {GPU: gpus} if gpus else {}
    return NodeView(
        name=name,
        capacity=NodeCapacity(name, cores=cores, memory_bytes=memory_gib * GiB, devices=devices),
        free_cores=cores - used_cores,
        free_memory_bytes=(memory_gib - used_memory_gib) * GiB,
        free_devices=devices,
        lease_count=leases,
        schedulable=schedulable,
    )


def task(key: str, cores: int = 1, memory_gib: int = 0, gpus: int = 0, *, seq: int = 0,
         nodes: int = 1, exclusive: bool = False, waited: int = 0) -> PendingTask:
    """A pending task asking ``cores``/``memory_gib``/``gpus`` on each of ``nodes`` nodes."""
    request = ResourceRequest(cores=cores, memory_bytes=memory_gib * GiB,
                              devices={GPU: gpus} if gpus else {}, exclusive=exclusive)
    return PendingTask(key, request, nodes=nodes, seq=seq, waited_rounds=waited)


def where(placement: Placement) -> dict[str, tuple[str, ...]]:
    return {assignment.key: assignment.nodes for assignment in placement.assigned}


# --- hand-written cases --------------------------------------------------------------------


def test_best_fit_takes_the_node_left_with_fewest_free_cores() -> None:
    nodes = [node("big", 64), node("mid", 16), node("small", 4)]
    placement = place([task("a", 8, seq=1), task("b", 4, seq=2), task("c", 40, seq=3)], nodes)
    assert where(placement) == {"a": ("mid",), "b": ("small",), "c": ("big",)}
    assert placement.waiting == {}


def test_best_fit_ties_go_by_memory_then_name() -> None:
    nodes = [node("n3", 8, 64), node("n2", 8, 32), node("n1", 8, 32)]
    placement = place([task("a", 8, 16, seq=1), task("b", 8, 16, seq=2),
                       task("c", 8, 16, seq=3)], nodes)
    assert where(placement) == {"a": ("n1",), "b": ("n2",), "c": ("n3",)}


def test_a_cpu_job_leaves_the_gpu_node_alone_when_cores_and_memory_tie() -> None:
    placement = place([task("cpu", 4)], [node("gpu", 8, gpus=2), node("cpu", 8)])
    assert where(placement) == {"cpu": ("cpu",)}


def test_what_a_task_takes_is_gone_for_the_next_one() -> None:
    placement = place([task("a", 3, seq=1), task("b", 3, seq=2)], [node("n", 4)])
    assert where(placement) == {"a": ("n",)}
    assert placement.waiting == {"b": "waiting for 3 free cores (most free on one node: 1)"}


def test_waiting_reasons_name_what_is_short_and_how_close_a_node_comes() -> None:
    nodes = [node("a", 8, 16, gpus=1, used_cores=4, used_memory_gib=12),
             node("b", 8, 16, used_cores=6, used_memory_gib=8)]
    placement = place([
        task("cores", 8, seq=1),
        task("memory", 1, 12, seq=2),
        task("gpu1", 1, gpus=1, seq=3),
        task("gpu2", 1, gpus=1, seq=4),
        task("apart", 3, 6, seq=5),
        task("two", 4, 10, seq=6),
    ], nodes)
    assert where(placement) == {"gpu1": ("a",)}
    assert placement.waiting == {
        "cores": "waiting for 8 free cores (most free on one node: 4)",
        "memory": "waiting for 12.0 GiB free memory (most free on one node: 8.0 GiB)",
        "gpu2": "waiting for 1 free nvidia.com/gpu (most free on one node: 0)",
        "apart": "waiting for a node with all of it free at once",
        "two": "waiting for 4 free cores (most free on one node: 3) and "
               "10.0 GiB free memory (most free on one node: 8.0 GiB)",
    }


def test_multinode_takes_distinct_nodes_all_or_none() -> None:
    nodes = [node(f"n{i}", 8, used_cores=used) for i, used in enumerate([0, 4, 6, 0])]
    placement = place([task("mpi", 4, nodes=3, seq=1), task("wide", 4, nodes=3, seq=2)], nodes)
    assert where(placement) == {"mpi": ("n1", "n0", "n3")}
    assert placement.waiting == {"wide": "waiting for 4 free cores on each of 3 nodes "
                                         "(2 have them)"}


def test_exclusive_needs_a_node_without_leases_and_takes_all_of_it() -> None:
    nodes = [node("busy", 16, used_cores=1, leases=1), node("idle", 16), node("idle2", 16)]
    placement = place([task("x", 1, exclusive=True, seq=1), task("y", 1, seq=2),
                       task("z", 1, exclusive=True, seq=3), task("w", 1, exclusive=True, seq=4)],
                      nodes)
    assert where(placement) == {"x": ("idle",), "y": ("busy",), "z": ("idle2",)}
    assert placement.waiting == {"w": "waiting for an idle node (exclusive; 0 node(s) have "
                                      "no leases)"}


def test_nothing_is_placed_beside_an_exclusive_task_or_on_unschedulable_nodes() -> None:
    nodes = [node("only", 16), node("draining", 64, schedulable=False)]
    placement = place([task("x", 2, exclusive=True, seq=1), task("y", 1, seq=2)], nodes)
    assert where(placement) == {"x": ("only",)}
    assert placement.waiting == {"y": "waiting for 1 free cores (most free on one node: 0)"}


def test_a_task_no_node_could_ever_hold_says_so() -> None:
    nodes = [node("a", 16, 64, gpus=2), node("b", 16)]
    placement = place([task("huge", 64, seq=1), task("mpi", 1, gpus=1, nodes=2, seq=2)], nodes)
    assert placement.waiting == {
        "huge": "cannot run on the current nodes: needs 64 cores; the largest node has 16",
        "mpi": "cannot run on the current nodes: needs 2 nodes that each hold its request; "
               "only 1 can",
    }


def test_fits_ever_counts_whole_nodes() -> None:
    capacities = [NodeCapacity("a", 8, 8 * GiB), NodeCapacity("b", 4, 8 * GiB)]
    assert fits_ever(ResourceRequest(cores=4), 2, capacities) is None
    assert fits_ever(ResourceRequest(cores=8), 2, capacities) == (
        "needs 2 nodes that each hold its request; only 1 can")
    assert fits_ever(ResourceRequest(cores=16), 1, capacities) == (
        "needs 16 cores; the largest node has 8")
    assert fits_ever(ResourceRequest(), 1, []) == "no node or pool exists to run it"


def test_backfill_lets_small_tasks_past_a_big_one_until_it_has_waited_long_enough() -> None:
    nodes = [node("a", 8, used_cores=4, leases=1), node("b", 8, used_cores=2, leases=1)]
    pending = [task("big", 8, seq=1), task("small", 2, seq=2)]
    fresh = place(pending, nodes)
    assert where(fresh) == {"small": ("a",)}
    assert fresh.reserved == {}

    starving = [replace(pending[0], waited_rounds=RESERVE_AFTER_ROUNDS), pending[1]]
    held = place(starving, nodes)
    assert held.reserved == {"big": ("b",)}
    assert where(held) == {"small": ("a",)}
    assert held.waiting == {"big": "waiting for 8 free cores (most free on one node: 6); "
                                   "b held back for it"}
    crowded = place([*starving, task("more", 4, seq=3)], nodes)
    assert crowded.waiting["more"] == (
        "waiting for 4 free cores (most free on one node: 2) "
        "(the nodes that could hold it are held back for older big)")


def test_reservations_do_not_overlap_and_the_oldest_holds_first() -> None:
    nodes = [node("a", 8, used_cores=1, leases=1), node("b", 8, used_cores=2, leases=1)]
    pending = [task("old", 8, seq=1, waited=5), task("young", 8, seq=2, waited=5),
               task("third", 8, seq=3, waited=5)]
    placement = place(pending, nodes)
    assert placement.reserved == {"old": ("a",), "young": ("b",)}
    assert placement.assigned == ()


def test_duplicate_keys_and_zero_nodes_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct keys"):
        place([task("a"), task("a")], [node("n", 4)])
    with pytest.raises(ValueError, match="at least 1"):
        task("a", nodes=0)


def test_a_stream_of_small_jobs_does_not_starve_a_big_one() -> None:
    """Rounds of a tiny cluster: 1-core jobs keep arriving and run for 2 rounds each."""

    def rounds_until_big_starts(reserve_after: int, limit: int = 40) -> int | None:
        running: list[tuple[str, str, int, int]] = []  # key, node, cores, rounds left
        pending: list[PendingTask] = []
        for round_number in range(limit):
            pending += [task(f"s{round_number}-{i}", 1, seq=round_number * 10 + i)
                        for i in range(3)]
            if round_number == 2:  # the big one comes once the nodes are busy
                pending.append(task("big", 4, seq=round_number * 10 - 1))
            used: dict[str, int] = defaultdict(int)
            for _, name, cores, _ in running:
                used[name] += cores
            views = [node(name, 4, used_cores=used[name],
                          leases=sum(1 for r in running if r[1] == name)) for name in ("a", "b")]
            placement = place(pending, views, reserve_after=reserve_after)
            started = where(placement)
            if "big" in started:
                return round_number
            by_key = {t.key: t for t in pending}
            running = [(k, n, c, left - 1) for k, n, c, left in running if left > 1]
            running += [(key, names[0], by_key[key].request.cores, 2)
                        for key, names in started.items()]
            pending = [replace(t, waited_rounds=t.waited_rounds + 1)
                       for t in pending if t.key not in started]
        return None

    assert rounds_until_big_starts(reserve_after=10**6) is None  # pure backfill starves it
    started = rounds_until_big_starts(reserve_after=RESERVE_AFTER_ROUNDS)
    assert started is not None and started <= 2 + RESERVE_AFTER_ROUNDS + 2


# --- properties over seeded random cases -------------------------------------------------


def random_case(rng: random.Random) -> tuple[list[PendingTask], list[NodeView]]:
    nodes = []
    for i in range(rng.randint(0, 6)):
        cores = rng.choice([2, 4, 8, 16])
        memory = rng.choice([4, 16, 64])
        gpus = rng.choice([0, 0, 1, 4])
        leases = rng.choice([0, 0, 1, 3])
        used_cores = rng.randint(0, cores) if leases else 0
        used_memory = rng.randint(0, memory) if leases else 0
        view = node(f"n{i}", cores, memory, gpus, used_cores=used_cores,
                    used_memory_gib=used_memory, leases=leases,
                    schedulable=rng.random() > 0.1)
        if gpus and leases:
            view = replace(view, free_devices={GPU: rng.randint(0, gpus)})
        nodes.append(view)
    pending = [
        task(f"t{i}", rng.randint(1, 12), rng.choice([0, 1, 8, 32]), rng.choice([0, 0, 0, 1, 2]),
             seq=rng.randint(0, 5), nodes=rng.choice([1, 1, 1, 2, 3]),
             exclusive=rng.random() < 0.15, waited=rng.choice([0, 0, 1, 5]))
        for i in range(rng.randint(0, 12))
    ]
    return pending, nodes


def fits(request: ResourceRequest, cores: int, memory: int, devices: dict[str, int]) -> bool:
    return (request.cores <= cores and request.memory_bytes <= memory
            and all(n <= devices.get(kind, 0) for kind, n in request.devices.items()))


def check_properties(pending: list[PendingTask], nodes: list[NodeView], out: Placement) -> None:
    tasks = {t.key: t for t in pending}
    views = {v.name: v for v in nodes}
    # every task is decided exactly once
    assert sorted([a.key for a in out.assigned] + list(out.waiting)) == sorted(tasks)
    # left over per node, subtracting what was placed; never below zero
    cores = {v.name: v.free_cores for v in nodes}
    memory = {v.name: v.free_memory_bytes for v in nodes}
    devices = {v.name: dict(v.free_devices) for v in nodes}
    placed_on: dict[str, list[PendingTask]] = defaultdict(list)
    order = sorted(pending, key=lambda t: (t.seq, t.key))
    position = {t.key: i for i, t in enumerate(order)}
    for assignment in out.assigned:
        t = tasks[assignment.key]
        assert len(assignment.nodes) == t.nodes == len(set(assignment.nodes))
        for name in assignment.nodes:
            assert views[name].schedulable
            placed_on[name].append(t)
            cores[name] -= t.request.cores
            memory[name] -= t.request.memory_bytes
            for kind, n in t.request.devices.items():
                devices[name][kind] = devices[name].get(kind, 0) - n
            if t.request.exclusive:
                assert views[name].lease_count == 0
                assert fits(t.request, views[name].free_cores, views[name].free_memory_bytes,
                            dict(views[name].free_devices))
    for name in placed_on:
        assert cores[name] >= 0 and memory[name] >= 0, f"{name} overcommitted"
        assert all(n >= 0 for n in devices[name].values()), f"{name} devices overcommitted"
        if any(t.request.exclusive for t in placed_on[name]):
            assert len(placed_on[name]) == 1, f"{name}: exclusive task shares its node"
    # reservations: distinct nodes, and no later task placed on them
    held = [name for names in out.reserved.values() for name in names]
    assert len(held) == len(set(held))
    for key, names in out.reserved.items():
        assert key in out.waiting
        for name in names:
            assert all(position[t.key] < position[key] for t in placed_on[name])
    # no needless waiting: a waiting task does not fit what is left on the unheld nodes
    for key in out.waiting:
        t = tasks[key]
        room = [name for name, view in views.items()
                if view.schedulable and name not in held
                and not any(p.request.exclusive for p in placed_on[name])
                and (not t.request.exclusive or (view.lease_count == 0 and not placed_on[name]))
                and fits(t.request, cores[name], memory[name], devices[name])]
        assert len(room) < t.nodes, f"{key} waits although {room} could hold it"


@pytest.mark.parametrize("seed", range(8))
def test_random_rounds_never_overcommit_and_never_wait_needlessly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(250):
        pending, nodes = random_case(rng)
        placement = place(pending, nodes)
        check_properties(pending, nodes, placement)
        shuffled_pending, shuffled_nodes = pending[:], nodes[:]
        rng.shuffle(shuffled_pending)
        rng.shuffle(shuffled_nodes)
        assert place(shuffled_pending, shuffled_nodes) == placement  # input order is irrelevant


@pytest.mark.parametrize("seed", range(4))
def test_random_rounds_place_each_task_on_the_best_fit_left(seed: int) -> None:
    """Replayed in decision order, every task went to the node that fit it best then (the
    round keeps its best-fit order as nodes fill rather than sorting for every task)."""
    rng = random.Random(seed)
    for _ in range(250):
        pending, nodes = random_case(rng)
        pending = [replace(t, nodes=1, waited_rounds=0,
                           request=replace(t.request, exclusive=False)) for t in pending]
        nodes += [node(f"m{i}", 8, 16) for i in range(rng.randint(0, 40))]  # many alike
        placement = place(pending, nodes)
        free = {v.name: (v.free_cores, v.free_memory_bytes, dict(v.free_devices))
                for v in nodes if v.schedulable}
        for assignment in placement.assigned:
            request = next(t.request for t in pending if t.key == assignment.key)

            best = min((c - request.cores, m - request.memory_bytes,
                        sum(d.values()) - sum(request.devices.values()), name)
                       for name, (c, m, d) in free.items() if fits(request, c, m, d))
            assert assignment.nodes == (best[-1],)
            cores, memory, devices = free[assignment.nodes[0]]
            free[assignment.nodes[0]] = (
                cores - request.cores, memory - request.memory_bytes,
                {kind: n - request.devices.get(kind, 0) for kind, n in devices.items()})


# --- rooms kept from round to round --------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_rooms_kept_through_changes_decide_as_a_round_on_fresh_views(seed: int) -> None:
    """A :class:`Rooms` kept through rounds, node changes and removals, updated only for
    the nodes that changed, decides every round as :func:`place` on all the views does."""
    rng = random.Random(seed)
    rooms = Rooms()
    views: dict[str, NodeView] = {}
    for _ in range(200):
        for _ in range(rng.randint(0, 4)):  # some nodes change, come, go
            _, fresh = random_case(rng)
            for view in fresh:
                view = replace(view, name=rng.choice(["a", "b", "c", "d", "e", "f", "g"]))
                views[view.name] = view
                rooms.update(view)
            if views and rng.random() < 0.2:
                gone = rng.choice(sorted(views))
                del views[gone]
                rooms.remove(gone)
        pending, _ = random_case(rng)
        assert rooms.place(pending) == place(pending, list(views.values()))


def test_a_rounds_work_follows_the_tasks_it_places_not_the_idle_nodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the rooms are kept, a round that places a few tasks looks at a few rooms,
    however many idle nodes there are (every room was checked at every round before)."""
    from fuzz.scheduler import placement

    checks = {"holds": 0}
    holds = placement._Room.holds

    def counted(room: placement._Room, request: ResourceRequest) -> bool:
        checks["holds"] += 1
        return holds(room, request)

    monkeypatch.setattr(placement._Room, "holds", counted)
    looked = {}
    for count in (50, 5000):
        rooms = Rooms(node(f"n{i:05}", 64) for i in range(count))
        rooms.place([task("warm")])  # the request shape's order, made once
        used: dict[str, int] = defaultdict(int)
        checks["holds"] = 0
        for i in range(5):  # tasks start (the caller updates their node), rounds go on
            placed = rooms.place([task(f"r{i}t{j}", seq=j) for j in range(4)])
            for assignment in placed.assigned:
                used[assignment.nodes[0]] += 1
            for name in {assignment.nodes[0] for assignment in placed.assigned}:
                rooms.update(node(name, 64, used_cores=used[name], leases=used[name]))
        looked[count] = checks["holds"]
    assert sum(used.values()) == 20
    assert looked[5000] <= looked[50] + 8, looked
    assert looked[5000] < 100, looked
