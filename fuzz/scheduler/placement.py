"""Which registered nodes each pending task runs on, chosen by counts alone.

:func:`place` is one scheduling round: it takes the pending tasks and what every
node has free now, and returns the tasks to start (with their nodes) and, for
each task left waiting, why. It never does I/O; the orchestrator acquires the
leases it decides, and the node agent packs the exact CPUs (affinity) and refuses
overcommit (:mod:`fuzz.substrate.capacity.leases`), so a stale view costs a refused lease,
never a job on a node that cannot hold it.

Rules of one round:

* Tasks are decided in submission order (``seq``, then ``key``). What a placed
  task takes is subtracted before the next decision, so one round never
  overcommits a node.
* **Best fit**: of the nodes that can hold the request now, the one that leaves
  the fewest free cores, then the least free memory, then the fewest free
  devices, then the first by name. Big nodes stay free for big jobs, and the
  answer is deterministic. A multinode task takes the ``nodes`` best such nodes,
  all of them or none.
* **Exclusive** tasks need a node without leases on which nothing else was placed
  in this round, and take all of it.
* **Backfill**: a task that does not fit does not block later, smaller ones.
* **No starvation**: a task that has waited ``reserve_after`` rounds or more
  (``PendingTask.waited_rounds``, counted by the caller) and still does not fit
  gets a *reservation*: the least-used nodes that could hold it when empty (used
  cores, then used memory, then name) are held back for it, and no later task is
  placed on them. Held nodes only drain, so the task starts once the jobs on them
  end. Reservations never overlap: the oldest starving task holds nodes first, a
  younger one only among the nodes left.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fuzz.resources import (
    NodeCapacity,
    ResourceRequest,
    cpus_taken,
    label_shortages,
    shortages,
    shortfall,
    topology_shortages,
)
from fuzz.units import format_bytes

RESERVE_AFTER_ROUNDS = 3
"""How many rounds a task waits before nodes are held back for it (see the module doc)."""


@dataclass(frozen=True)
class NodeView:
    """One registered node as the scheduler sees it: its size, what is free now, its leases."""

    name: str
    capacity: NodeCapacity
    free_cores: int
    free_memory_bytes: int
    free_devices: Mapping[str, int]
    lease_count: int
    schedulable: bool = True


@dataclass(frozen=True)
class PendingTask:
    """A job (or one task of an array) waiting to start.

    ``nodes`` distinct nodes must each hold ``request`` (multinode); ``seq`` is the
    submission order; ``waited_rounds`` is how many rounds it has already waited.
    """

    key: str
    request: ResourceRequest
    nodes: int = 1
    seq: int = 0
    waited_rounds: int = 0

    def __post_init__(self) -> None:
        """Refuse a task that asks for fewer than one node."""
        if self.nodes < 1:
            raise ValueError(f"task {self.key!r} asks for {self.nodes} nodes; at least 1")


@dataclass(frozen=True)
class Assignment:
    """Start task ``key`` on ``nodes`` (one name per node of a multinode task)."""

    key: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """The outcome of one round.

    ``assigned`` in decision order; ``waiting`` maps each other task to why it
    waits; ``reserved`` maps a starving task to the nodes held back for it.
    """

    assigned: tuple[Assignment, ...]
    waiting: Mapping[str, str]
    reserved: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def fits_ever(
    request: ResourceRequest, nodes: int, capacities: Sequence[NodeCapacity]
) -> str | None:
    """Why ``nodes`` distinct nodes of ``capacities`` could never each hold ``request``.

    None when they could (if they were empty). The reason comes from
    :func:`fuzz.resources.shortfall`, or counts the nodes when too few are big enough.
    """
    reason = shortfall(request, capacities)
    if reason is not None or nodes <= 1:
        return reason
    holding = sum(1 for capacity in capacities if not shortages(request, capacity))
    if holding < nodes:
        return f"needs {nodes} nodes that each hold its request; only {holding} can"
    return None


def place(
    pending: Sequence[PendingTask],
    nodes: Sequence[NodeView],
    *,
    reserve_after: int = RESERVE_AFTER_ROUNDS,
) -> Placement:
    """Decide one round: which ``pending`` tasks start on which ``nodes``, and why others wait.

    See the module documentation for the rules. Raises ValueError when two tasks
    share a key. (A scheduler that runs round after round keeps a :class:`Rooms`.)
    """
    return Rooms(nodes).place(pending, reserve_after=reserve_after)


FITTING_KEPT_ROUNDS = 64
"""How many rounds the best-fit order of a request shape no round asked for is kept."""


class Rooms:
    """What every schedulable node has free, kept from one round to the next.

    A scheduler that ran :func:`place` built every node's room and sorted them all,
    for each request shape, at every round: at thousands of nodes that was most of
    a round, whatever it placed. Here the caller gives the views of the nodes that
    changed (:meth:`update`, :meth:`remove`) and each request shape's best-fit order
    is kept and moved only for those, so a round that places a few one-node tasks
    costs what it places. A round's own takes and reservations are undone at its
    end: the rooms stay what the views said until the caller updates them.
    """

    def __init__(self, views: Iterable[NodeView] = ()) -> None:
        """Rooms for ``views`` (the unschedulable ones left out)."""
        self._rooms: dict[str, _Room] = {}
        self._fitting: dict[tuple[Any, ...], _Fitting] = {}  # one-node requests, by shape
        self._asked: dict[tuple[Any, ...], int] = {}  # shape: the last round that asked
        self._never: dict[tuple[tuple[Any, ...], int], str | None] = {}  # see fits_ever
        self._rounds = 0
        for view in views:
            self.update(view)

    def __len__(self) -> int:
        """How many schedulable nodes there are."""
        return len(self._rooms)

    def update(self, view: NodeView) -> None:
        """Node ``view.name`` is as ``view`` says now (out, when it is not schedulable)."""
        if not view.schedulable:
            self.remove(view.name)
            return
        room = self._rooms.get(view.name)
        if room is None:
            room = self._rooms[view.name] = _Room.of(view)
            self._never.clear()
        else:
            if room.view.capacity != view.capacity:
                self._never.clear()
            room.reset(view)
        for index in self._fitting.values():
            index.update(room)

    def remove(self, name: str) -> None:
        """Node ``name`` is gone, or takes no work now."""
        room = self._rooms.pop(name, None)
        if room is None:
            return
        self._never.clear()
        for index in self._fitting.values():
            index.discard(room)

    def place(
        self, pending: Sequence[PendingTask], *, reserve_after: int = RESERVE_AFTER_ROUNDS
    ) -> Placement:
        """Decide one round (see :func:`place`), on the rooms as they are now."""
        keys = [task.key for task in pending]
        if len(set(keys)) != len(keys):
            raise ValueError("pending tasks must have distinct keys")
        self._rounds += 1
        touched: dict[str, _Room] = {}
        try:
            return self._decide(pending, reserve_after, touched)
        finally:
            for room in touched.values():  # the round's takes and holds are undone
                room.reset(room.view)
            self._changed(touched.values())
            self._forget_unasked()

    def _decide(self, pending: Sequence[PendingTask], reserve_after: int,
                touched: dict[str, _Room]) -> Placement:
        assigned: list[Assignment] = []
        waiting: dict[str, str] = {}
        reserved: dict[str, tuple[str, ...]] = {}

        def changed(changed_rooms: Iterable[_Room]) -> None:
            rooms = list(changed_rooms)
            touched.update((room.view.name, room) for room in rooms)
            self._changed(rooms)

        shapes: dict[int, tuple[Any, ...]] = {}  # by id(request): a job's tasks share one
        for task in sorted(pending, key=lambda t: (t.seq, t.key)):
            shape = shapes.get(id(task.request))
            if shape is None:
                shape = shapes[id(task.request)] = _shape(task.request)
            never = self._never_fits(task, shape)
            if never is not None:
                waiting[task.key] = f"cannot run on the current nodes: {never}"
                continue
            if task.nodes == 1 and not task.request.exclusive:
                chosen = self._fitting_for(shape, task.request).best()
            else:
                chosen = _best_fit(task, [room for room in self._rooms.values()
                                          if room.held_for is None])
            if chosen:
                for room in chosen:
                    room.take(task.request)
                changed(chosen)
                assigned.append(Assignment(task.key, tuple(room.view.name for room in chosen)))
                continue
            rooms = list(self._rooms.values())
            unheld = [room for room in rooms if room.held_for is None]
            reason = _why_waiting(task, unheld)
            if task.waited_rounds >= reserve_after:
                held = _reserve(task, unheld)
                if held:
                    reserved[task.key] = held
                    reason += f"; {_names(held)} held back for it"
                    changed(self._rooms[name] for name in held)
            elif _best_fit(task, rooms):
                holders = sorted({room.held_for for room in rooms if room.held_for is not None})
                reason += (f" (the nodes that could hold it are held back for older "
                           f"{_names(holders)})")
            waiting[task.key] = reason
        return Placement(tuple(assigned), waiting, reserved)

    def _never_fits(self, task: PendingTask, shape: tuple[Any, ...]) -> str | None:
        """:func:`fits_ever` on the schedulable nodes, kept while their capacities stay."""
        if (shape, task.nodes) not in self._never:
            capacities = [room.view.capacity for room in self._rooms.values()]
            self._never[shape, task.nodes] = fits_ever(task.request, task.nodes, capacities)
        return self._never[shape, task.nodes]

    def _fitting_for(self, shape: tuple[Any, ...], request: ResourceRequest) -> _Fitting:
        self._asked[shape] = self._rounds
        index = self._fitting.get(shape)
        if index is None:
            index = self._fitting[shape] = _Fitting(request, self._rooms.values())
        return index

    def _changed(self, rooms: Iterable[_Room]) -> None:
        indexes = list(self._fitting.values())
        for room in rooms:
            for index in indexes:
                index.update(room)

    def _forget_unasked(self) -> None:
        """Drop the best-fit orders no round asked for lately (each costs every update)."""
        for shape, last in list(self._asked.items()):
            if self._rounds - last > FITTING_KEPT_ROUNDS:
                del self._asked[shape]
                del self._fitting[shape]


@dataclass
class _Room:
    """What is left of one schedulable node as the round goes on."""

    view: NodeView
    cores: int
    memory_bytes: int
    devices: dict[str, int]
    taken: bool = False
    whole: bool = False
    held_for: str | None = None

    @classmethod
    def of(cls, view: NodeView) -> _Room:
        return cls(view, view.free_cores, view.free_memory_bytes, dict(view.free_devices))

    def reset(self, view: NodeView) -> None:
        """Be what ``view`` has free, nothing taken or held in this round."""
        self.view = view
        self.cores, self.memory_bytes = view.free_cores, view.free_memory_bytes
        self.devices = dict(view.free_devices)
        self.taken = self.whole = False
        self.held_for = None

    def idle(self) -> bool:
        """No lease and nothing placed in this round: an exclusive task may take it."""
        return self.view.lease_count == 0 and not self.taken

    def holds(self, request: ResourceRequest) -> bool:
        """Whether ``request`` fits what is left now (and the node's labels and topology
        could ever hold it)."""
        if self.whole or (request.exclusive and not self.idle()):
            return False
        capacity = self.view.capacity
        return (
            cpus_taken(request, capacity) <= self.cores
            and request.memory_bytes <= self.memory_bytes
            and all(count <= self.devices.get(kind, 0) for kind, count in request.devices.items())
            and not label_shortages(request.labels, capacity.labels)
            and not (request.sockets and topology_shortages(request, capacity))
        )

    def leftover(self, request: ResourceRequest) -> tuple[int, int, int, str]:
        """The best-fit order: free cores, memory, devices left after ``request``, then name."""
        devices = sum(self.devices.values()) - sum(request.devices.values())
        return (
            self.cores - cpus_taken(request, self.view.capacity),
            self.memory_bytes - request.memory_bytes,
            devices,
            self.view.name,
        )

    def used(self) -> tuple[int, int, str]:
        """The reservation order: cores and memory in use, then name."""
        capacity = self.view.capacity
        return (capacity.cores - self.cores, capacity.memory_bytes - self.memory_bytes,
                self.view.name)

    def take(self, request: ResourceRequest) -> None:
        """Subtract ``request``, or everything when it is exclusive."""
        self.taken = True
        if request.exclusive:
            self.whole = True
            self.cores = self.memory_bytes = 0
            self.devices = dict.fromkeys(self.devices, 0)
            return
        self.cores -= cpus_taken(request, self.view.capacity)
        self.memory_bytes -= request.memory_bytes
        for kind, count in request.devices.items():
            self.devices[kind] = self.devices.get(kind, 0) - count


def _shape(request: ResourceRequest) -> tuple[Any, ...]:
    """``request`` as a dict key: tasks of one job ask for the same."""
    return (request.cores, request.affinity, request.memory_bytes,
            tuple(sorted(request.devices.items())), request.exclusive,
            tuple(sorted(request.labels.items())), request.sockets, request.threads)


class _Fitting:
    """The unheld rooms that hold one (one-node, not exclusive) request now, best fit first.

    :func:`_best_fit` sorts every room for every task; at thousands of nodes and tens
    of tasks a round that was most of the orchestrator's time. This keeps the order
    (from round to round, in :class:`Rooms`) and moves only the rooms that changed: the
    same choice as :func:`_best_fit` (its order is total: the node's name comes last).
    """

    def __init__(self, request: ResourceRequest, rooms: Iterable[_Room]) -> None:
        self._request = request
        self._rooms = {id(room): room for room in rooms}
        self._order = sorted(self._key(room) for room in self._rooms.values()
                             if self._fits(room))
        self._keys = {key[1]: key for key in self._order}  # by id(room)

    def _key(self, room: _Room) -> tuple[tuple[int, int, int, str], int]:
        return room.leftover(self._request), id(room)

    def _fits(self, room: _Room) -> bool:
        return room.held_for is None and room.holds(self._request)

    def best(self) -> list[_Room]:
        """The best-fitting room (a list of one), or [] when none holds the request."""
        return [self._rooms[self._order[0][1]]] if self._order else []

    def update(self, room: _Room) -> None:
        """Put ``room`` (new, or changed) where it belongs now (out, if it no longer holds
        the request)."""
        self.discard(room)
        self._rooms[id(room)] = room
        if self._fits(room):
            key = self._key(room)
            bisect.insort(self._order, key)
            self._keys[id(room)] = key

    def discard(self, room: _Room) -> None:
        """Take ``room`` out."""
        self._rooms.pop(id(room), None)
        old = self._keys.pop(id(room), None)
        if old is not None:
            del self._order[bisect.bisect_left(self._order, old)]


def _best_fit(task: PendingTask, rooms: Iterable[_Room]) -> list[_Room]:
    """The ``task.nodes`` best-fitting rooms that hold the request now, or [] when too few do."""
    fitting = sorted(
        (room for room in rooms if room.holds(task.request)),
        key=lambda room: room.leftover(task.request),
    )
    return fitting[: task.nodes] if len(fitting) >= task.nodes else []


def _reserve(task: PendingTask, rooms: Iterable[_Room]) -> tuple[str, ...]:
    """Hold back the least-used rooms that could hold ``task`` when empty; () when too few."""
    able = sorted(
        (room for room in rooms
         if not room.whole and not shortages(task.request, room.view.capacity)),
        key=_Room.used,
    )
    if len(able) < task.nodes:
        return ()
    for room in able[: task.nodes]:
        room.held_for = task.key
    return tuple(room.view.name for room in able[: task.nodes])


def _why_waiting(task: PendingTask, rooms: Sequence[_Room]) -> str:
    """What is short now, e.g. ``waiting for 8 free cores (most free on one node: 4)``."""
    request, count = task.request, task.nodes
    open_rooms = [room for room in rooms  # the nodes whose labels and topology could hold it
                  if not room.whole and not shortages(request, room.view.capacity)]
    if request.exclusive:
        idle = sum(1 for room in open_rooms if room.idle())
        wanted = "an idle node" if count == 1 else f"{count} idle nodes"
        return f"waiting for {wanted} (exclusive; {idle} node(s) have no leases)"
    wants = [
        _short(f"{request.cores} free cores", request.cores,
               [room.cores for room in open_rooms], count, str),
        _short(f"{format_bytes(request.memory_bytes)} free memory", request.memory_bytes,
               [room.memory_bytes for room in open_rooms], count, format_bytes),
    ]
    wants += [
        _short(f"{amount} free {kind}", amount,
               [room.devices.get(kind, 0) for room in open_rooms], count, str)
        for kind, amount in sorted(request.devices.items())
    ]
    short = [want for want in wants if want]
    if short:
        return "waiting for " + " and ".join(short)
    where = "a node" if count == 1 else f"{count} nodes"
    return f"waiting for {where} with all of it free at once"


def _short(
    want: str, amount: int, free: list[int], count: int, show: Callable[[int], str]
) -> str:
    """``want`` with how close the nodes come; "" when ``count`` nodes have ``amount`` free."""
    having = sum(1 for value in free if value >= amount)
    if amount == 0 or having >= count:
        return ""
    if count == 1:
        return f"{want} (most free on one node: {show(max(free, default=0))})"
    return f"{want} on each of {count} nodes ({having} have them)"


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)
