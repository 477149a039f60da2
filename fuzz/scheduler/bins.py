"""The vocabulary of :mod:`fuzz.scheduler.packing`: bin types, item classes, bins, and the
room that limits leave. Pure data and arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

UNBOUNDED = 1 << 62
"""More than any count: the ``per_bin`` of items that may share a bin freely."""
EPSILON = 1e-9
"""Prices closer than this are equal."""


@dataclass(frozen=True)
class BinType:
    """A kind of bin: one offering of one pool (``group``), or one existing node (``fixed``).

    A fixed type stands for exactly one node that exists already: its sizes are what
    is free on it, its price is 0, it is never opened or closed, and it takes an
    exclusive item only when ``idle`` (nothing else runs or is placed there).
    """

    index: int
    cores: int
    memory: int
    gpus: int
    price: float
    group: int = 0
    fixed: bool = False
    idle: bool = True


@dataclass(frozen=True)
class ItemClass:
    """``count`` items of one shape that may go on the bin ``types`` listed (by index).

    At most ``per_bin`` of them share one bin (1 for the nodes of a multinode job);
    an ``exclusive`` item takes a bin alone.
    """

    index: int
    cores: int
    memory: int
    gpus: int
    count: int
    types: frozenset[int]
    per_bin: int = UNBOUNDED
    exclusive: bool = False


@dataclass(frozen=True)
class Limits:
    """How many new bins may be opened: per group (``headroom``), and a quota over all."""

    headroom: Sequence[int]
    nodes: int | None = None
    cores: int | None = None
    gpus: int | None = None
    price: float | None = None


@dataclass(eq=False)
class Bin:
    """A bin being filled: what is free on it and how many items of each class it holds.

    Bins compare by identity: two bins with the same items are still two nodes.
    """

    type: BinType
    free_cores: int
    free_memory: int
    free_gpus: int
    contents: dict[int, int] = field(default_factory=dict)
    sealed: bool = False
    worth: float = 0.0
    """The value of its items (see :class:`fuzz.scheduler.greedy.Tables`)."""

    @classmethod
    def empty(cls, kind: BinType) -> Bin:
        """A bin of ``kind`` with nothing on it."""
        return cls(kind, kind.cores, kind.memory, kind.gpus)

    def load(self) -> tuple[int, int, int]:
        """Cores, memory and GPUs its items take."""
        kind = self.type
        return (kind.cores - self.free_cores, kind.memory - self.free_memory,
                kind.gpus - self.free_gpus)

    def add(self, item: ItemClass, count: int, value: float) -> None:
        """Put ``count`` items of ``item``, each worth ``value``, on it."""
        self.worth += count * value
        self.free_cores -= count * item.cores
        self.free_memory -= count * item.memory
        self.free_gpus -= count * item.gpus
        self.contents[item.index] = self.contents.get(item.index, 0) + count
        self.sealed = self.sealed or item.exclusive

    def retype(self, kind: BinType) -> None:
        """Make it a bin of ``kind`` with the same items."""
        cores, memory, gpus = self.load()
        self.type = kind
        self.free_cores, self.free_memory, self.free_gpus = (
            kind.cores - cores, kind.memory - memory, kind.gpus - gpus)


@dataclass(frozen=True)
class Packing:
    """The outcome: every bin used (fixed ones included) and the items left per class."""

    bins: tuple[Bin, ...]
    unplaced: tuple[int, ...]

    def price(self) -> float:
        """The total price of the new bins."""
        return sum(b.type.price for b in self.bins if not b.type.fixed)


@dataclass
class Room:
    """What the limits still allow, updated as bins are opened and closed."""

    headroom: list[int]
    nodes: int | None
    cores: int | None
    gpus: int | None
    price: float | None

    @classmethod
    def of(cls, limits: Limits) -> Room:
        """The room ``limits`` leave before any bin is opened."""
        return cls(list(limits.headroom), limits.nodes, limits.cores, limits.gpus, limits.price)

    def copy(self) -> Room:
        """An independent copy."""
        return Room(list(self.headroom), self.nodes, self.cores, self.gpus, self.price)

    def allows(self, kind: BinType) -> int:
        """How many more bins of ``kind`` may be opened."""
        if kind.fixed:
            return 0
        count = self.headroom[kind.group]
        if self.nodes is not None:
            count = min(count, self.nodes)
        if self.cores is not None and kind.cores:
            count = min(count, self.cores // kind.cores)
        if self.gpus is not None and kind.gpus:
            count = min(count, self.gpus // kind.gpus)
        if self.price is not None and kind.price > 0:
            count = min(count, int((self.price + EPSILON) // kind.price))
        return max(count, 0)

    def take(self, kind: BinType, count: int = 1) -> None:
        """Account for ``count`` new bins of ``kind`` (a negative count closes them)."""
        self.headroom[kind.group] -= count
        if self.nodes is not None:
            self.nodes -= count
        if self.cores is not None:
            self.cores -= count * kind.cores
        if self.gpus is not None:
            self.gpus -= count * kind.gpus
        if self.price is not None:
            self.price -= count * kind.price

    def allows_swap(self, old: Sequence[BinType], new: BinType) -> bool:
        """Whether closing the bins of ``old`` makes room to open one bin of ``new``."""
        for kind in old:
            self.take(kind, -1)
        allowed = self.allows(new) >= 1
        for kind in old:
            self.take(kind)
        return allowed


def fit(item: ItemClass, cores: int, memory: int, gpus: int, held: int = 0) -> int:
    """How many items of ``item`` fit in the free sizes given, on a bin holding ``held``."""
    count = item.per_bin - held
    if item.cores:
        count = min(count, cores // item.cores)
    if item.memory:
        count = min(count, memory // item.memory)
    if item.gpus:
        count = min(count, gpus // item.gpus)
    return max(count, 0)
