"""The cheapest bins for items of a few shapes: the engine behind :mod:`fuzz.scheduler.offerings`.

This is variable-sized, three-dimensional (cores, memory, GPUs) bin packing with
prices: items come in *classes* of one shape, bins in *types* (one offering of one
pool) with a price, and the goal is the lowest total price. The problem is NP-hard;
:func:`pack` is a heuristic in four phases, written here because no maintained
pure-Python library solves it within the elastic loop's budget (integer
programming takes seconds; this takes milliseconds):

1. **Fixed bins first.** Bins that exist already (nodes booting) cost nothing more:
   each is filled with the most valuable items that fit.
2. **Exclusive items** take a bin alone, so each takes the cheapest type that holds it.
3. **Greedy by cost-effectiveness.** Every item has a *value*: the price of the
   share it takes of the cheapest type that holds it (its dominant share of cores,
   memory or GPUs times that type's price), a lower bound on what it costs anywhere.
   Each step fills one bin of every type with the remaining items in three ways —
   most valuable classes first; densest first (value per share of the bin); and
   *balanced* (each time the class worth most per share of what is *left* of the
   bin, so that a core-heavy and a memory-heavy class fill one bin together) — and
   opens the bin with the lowest price per value packed. The same fill is repeated
   while the items last, so a step opens many bins at once and the number of steps
   grows with the number of classes, not of items. A type is skipped while one
   that dominates it (no dearer, no smaller, open to the same classes) may be
   opened; the balanced fill, the costly one, is tried only for problems of at most
   :data:`BALANCE_CLASSES` classes and only on types whose bound on the value of one
   bin could beat the best ratio found. Fills are kept from step to step until the
   classes they depend on change.
4. **Local search** until nothing improves: move each bin to the cheapest type that
   still holds its load (*downsize*); empty the least cost-effective bins into the
   room left in others (*eliminate*); put two bins' loads on one cheaper bin
   (*merge*); and pack the items of the least cost-effective bins again from
   scratch (*repack*).

Why it is near-optimal: the greedy is the classic ratio rule of weighted set
cover, which only loses on the last, partly filled bins of each shape — exactly
the bins the local search revisits. ``bench/offering_choice.py`` measures the
result against the optimum of an integer program.

Limits (new bins per group, and a quota of nodes, cores, GPUs and price) are never
exceeded; items that find no room stay unplaced. Everything is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

UNBOUNDED = 1 << 62
"""More than any count: the ``per_bin`` of items that may share a bin freely."""
EPSILON = 1e-9
MAX_PASSES = 8
"""Local search passes at most (each pass runs every move once)."""
WORST_BINS = 12
"""How many of the least cost-effective bins the eliminate, merge and repack moves try."""
REPACK_SIZES = (3, 6)
VALUE_FIRST, DENSE_FIRST, BALANCED = "value-first", "dense-first", "balanced"
FILLS = (VALUE_FIRST, DENSE_FIRST, BALANCED)
"""The ways to fill a bin: see :meth:`_Packer._pattern` and :meth:`_Packer._balanced`."""
BALANCE_CLASSES = 12
"""The balanced fill (slower) is tried only for problems of at most this many classes."""


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
    """The value of its items (see :class:`_Tables`)."""

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


def pack(classes: Sequence[ItemClass], types: Sequence[BinType], limits: Limits) -> Packing:
    """Place the items of ``classes`` on fixed bins and new bins of ``types`` as cheaply as
    the heuristic of this module finds, within ``limits``.

    ``classes[i].index`` must be ``i`` and ``types[j].index`` must be ``j``.
    """
    packer = _Packer(_Tables(classes, types), Room.of(limits), [c.count for c in classes])
    packer.fill_fixed()
    packer.construct()
    packer.improve()
    return Packing(tuple(packer.bins), tuple(packer.left))


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


_Row = tuple[int, int, int, int, int, float]
"""A class as the fill loop reads it: index, cores, memory, GPUs, per bin, value."""


class _Tables:
    """What every run over one problem shares, computed once: item values, fill orders
    (``rows``: most valuable first, ``dense_rows``: densest first, per type), how many
    items of each class fit in an empty bin of each type that may take it
    (``fits_of``), and which types dominate which."""

    def __init__(self, classes: Sequence[ItemClass], types: Sequence[BinType]) -> None:
        self.classes = classes
        self.types = types
        self.openable = [t for t in types if not t.fixed]
        self.value = [self._value(c) for c in classes]
        self.order = sorted(range(len(classes)),
                            key=lambda i: (-self.value[i], -classes[i].cores,
                                           -classes[i].memory, i))
        self.shared = {t.index: [i for i in self.order
                                 if t.index in classes[i].types and not classes[i].exclusive]
                       for t in types}
        row = [(i, c.cores, c.memory, c.gpus, c.per_bin, self.value[i])
               for i, c in enumerate(classes)]
        self.rows = {t: [row[i] for i in order] for t, order in self.shared.items()}
        self.dense_rows = {t.index: [row[i] for i in self._densest_first(t)] for t in types}
        self.sizes = [(c.cores, c.memory, c.gpus) for c in classes]
        self.fits_of: list[list[tuple[int, int]]] = [[] for _ in classes]
        for kind in types:
            for i in self.shared[kind.index]:
                self.fits_of[i].append((kind.index,
                                        fit(classes[i], kind.cores, kind.memory, kind.gpus)))
        self.balance = len(classes) <= BALANCE_CLASSES
        takers = {t.index: set(self.shared[t.index]) for t in self.openable}
        self.dominators = {t.index: self._dominators(t, takers) for t in self.openable}

    def _value(self, item: ItemClass) -> float:
        """The price of the share of the cheapest type holding ``item`` that it takes."""
        shares = [t.price * max(item.cores / t.cores if t.cores else 0.0,
                                item.memory / t.memory if t.memory else 0.0,
                                item.gpus / t.gpus if t.gpus else 0.0)
                  for t in self.openable if t.index in item.types]
        return min(shares, default=0.0)

    def _dominators(self, kind: BinType, takers: dict[int, set[int]]) -> list[BinType]:
        """The types at least as good as ``kind`` for every bin the greedy could open:
        no dearer, no smaller, and open to every class ``kind`` is open to (``takers``)."""
        return [other for other in self.openable
                if other.index != kind.index and other.price <= kind.price
                and other.cores >= kind.cores and other.memory >= kind.memory
                and other.gpus >= kind.gpus and takers[kind.index] <= takers[other.index]
                and (other.price, -other.cores, -other.memory, -other.gpus, other.index)
                < (kind.price, -kind.cores, -kind.memory, -kind.gpus, kind.index)]

    def _densest_first(self, kind: BinType) -> list[int]:
        """The classes that may share a bin of ``kind``, by value per share of it."""
        return sorted(self.shared[kind.index],
                      key=lambda i: (-self._density(self.classes[i], kind), i))

    def _density(self, item: ItemClass, kind: BinType) -> float:
        """Value per share of an empty bin of ``kind`` (its three shares summed)."""
        size = ((item.cores / kind.cores if kind.cores else 0.0)
                + (item.memory / kind.memory if kind.memory else 0.0)
                + (item.gpus / kind.gpus if kind.gpus else 0.0))
        return self.value[item.index] / size if size else math.inf


class _Packer:
    """One run of the heuristic over ``left`` items of the tables' classes."""

    def __init__(self, tables: _Tables, room: Room, left: list[int]) -> None:
        self.tables = tables
        self.classes = tables.classes
        self.types = tables.types
        self.value = tables.value
        self.room = room
        self.left = left
        self.fills: dict[tuple[int, str], tuple[list[tuple[int, int]], float]] = {}
        self.bins: list[Bin] = []

    # --- construction ---------------------------------------------------------------

    def fill_fixed(self) -> None:
        """Phase 1: fill each fixed bin with the most valuable items that fit."""
        for kind in self.types:
            if not kind.fixed:
                continue
            shared, shared_value = self._pattern(kind, self.tables.rows[kind.index])
            lone = self._best_exclusive(kind) if kind.idle else None
            if lone is not None and self.value[lone] >= shared_value:
                self._open(kind, [(lone, 1)], 1)
            elif shared:
                self._open(kind, shared, 1)

    def construct(self) -> None:
        """Phases 2 and 3: exclusive items on their cheapest type, then the greedy."""
        for i in self.tables.order:
            item = self.classes[i]
            if not item.exclusive:
                continue
            for kind in sorted((self.types[t] for t in item.types if not self.types[t].fixed),
                               key=lambda t: (t.price, t.index)):
                if not self.left[i]:
                    break
                if fit(item, kind.cores, kind.memory, kind.gpus):
                    self._open(kind, [(i, 1)], min(self.left[i], self.room.allows(kind)))
        while (step := self._best_step()) is not None:
            kind, pattern = step
            repeat = min(min(self.left[i] // n for i, n in pattern), self.room.allows(kind))
            self._open(kind, pattern, repeat)

    def _best_step(self) -> tuple[BinType, list[tuple[int, int]]] | None:
        """The bin to open next: of all types and fills, the lowest price per value packed
        (then the most value, the lowest price, the first type).

        A type is skipped while a type that dominates it may be opened. The balanced
        fill (the costly one) is only tried on a type whose bound on the value one bin
        could take leaves it a chance to beat the best ratio found.
        """
        room = self.room
        kinds = [kind for kind in self.tables.openable if room.allows(kind)
                 and not any(room.allows(other) for other in self.tables.dominators[kind.index])]
        best: tuple[float, float, float, int] | None = None
        chosen: tuple[BinType, list[tuple[int, int]]] | None = None
        fills = (VALUE_FIRST, DENSE_FIRST, BALANCED) if self.tables.balance else (
            VALUE_FIRST, DENSE_FIRST)
        for fill in fills:
            for kind in kinds:
                if fill == BALANCED and best is not None:
                    bound = self._value_bound(kind)
                    if bound <= 0 or kind.price >= best[0] * bound:
                        continue
                pattern, value = self._fill(kind, fill)
                if not pattern:
                    continue
                ratio = kind.price / value if value > 0 else (0.0 if kind.price == 0 else math.inf)
                rank = (ratio, -value, kind.price, kind.index)
                if best is None or rank < best:
                    best, chosen = rank, (kind, pattern)
        return chosen

    def _fill(self, kind: BinType, fill: str) -> tuple[list[tuple[int, int]], float]:
        """The pattern of ``fill`` for one bin of ``kind``, kept until a class it depends on
        changes (see :meth:`_forget_fills`)."""
        key = (kind.index, fill)
        found = self.fills.get(key)
        if found is None:
            if fill == BALANCED:
                found = self._balanced(kind)
            else:
                rows = self.tables.rows[kind.index] if fill == VALUE_FIRST else (
                    self.tables.dense_rows[kind.index])
                found = self._pattern(kind, rows)
            self.fills[key] = found
        return found

    def _value_bound(self, kind: BinType) -> float:
        """At most the value one bin of ``kind`` could take: no more than is left, and for
        each size that every class left needs, the bin's size times the best value per unit."""
        active = [i for i in self.tables.shared[kind.index] if self.left[i]]
        bound = sum(self.left[i] * self.value[i] for i in active)
        for dimension, capacity in enumerate((kind.cores, kind.memory, kind.gpus)):
            if active and all(self.tables.sizes[i][dimension] > 0 for i in active):
                bound = min(bound, capacity * max(self.value[i] / self.tables.sizes[i][dimension]
                                                  for i in active))
        return bound

    def _pattern(self, kind: BinType, rows: Sequence[_Row]) -> tuple[list[tuple[int, int]], float]:
        """The items one bin of ``kind`` would take, taking classes in the order of ``rows``
        (as many of each as fit), and their value."""
        cores, memory, gpus = kind.cores, kind.memory, kind.gpus
        pattern: list[tuple[int, int]] = []
        value = 0.0
        left = self.left
        for i, item_cores, item_memory, item_gpus, per_bin, worth in rows:  # the hot loop
            count = left[i]
            if not count:
                continue
            if item_cores and item_cores * count > cores:
                count = cores // item_cores
            if item_memory and item_memory * count > memory:
                count = memory // item_memory
            if item_gpus and item_gpus * count > gpus:
                count = gpus // item_gpus
            if count > per_bin:
                count = per_bin
            if count > 0:
                pattern.append((i, count))
                value += count * worth
                cores -= count * item_cores
                memory -= count * item_memory
                gpus -= count * item_gpus
        return pattern, value

    def _balanced(self, kind: BinType) -> tuple[list[tuple[int, int]], float]:
        """A fill that keeps the bin's sizes in step: at each step the class with the most
        value per share of what is *left* of the bin, half of what fits of it at a time."""
        cores, memory, gpus = kind.cores, kind.memory, kind.gpus
        taken: dict[int, int] = {}
        value = 0.0
        while True:
            best, best_density, best_count = -1, -1.0, 0
            for i in self.tables.shared[kind.index]:
                item = self.classes[i]
                held = taken.get(i, 0)
                count = min(self.left[i] - held, fit(item, cores, memory, gpus, held))
                if count <= 0:
                    continue
                size = ((item.cores / cores if item.cores else 0.0)
                        + (item.memory / memory if item.memory else 0.0)
                        + (item.gpus / gpus if item.gpus else 0.0))
                density = self.value[i] / size if size else float("inf")
                if density > best_density:
                    best, best_density, best_count = i, density, count
            if best < 0:
                break
            count = max(1, best_count // 2)
            item = self.classes[best]
            taken[best] = taken.get(best, 0) + count
            value += count * self.value[best]
            cores -= count * item.cores
            memory -= count * item.memory
            gpus -= count * item.gpus
        return sorted(taken.items()), value

    def _best_exclusive(self, kind: BinType) -> int | None:
        for i in self.tables.order:
            item = self.classes[i]
            if (item.exclusive and self.left[i] and kind.index in item.types
                    and fit(item, kind.cores, kind.memory, kind.gpus)):
                return i
        return None

    def _open(self, kind: BinType, pattern: Sequence[tuple[int, int]], repeat: int) -> None:
        before = {i: self.left[i] for i, _ in pattern}
        for _ in range(repeat):
            new = Bin.empty(kind)
            for i, count in pattern:
                new.add(self.classes[i], count, self.value[i])
                self.left[i] -= count
            self.bins.append(new)
        if not kind.fixed:
            self.room.take(kind, repeat)
        self._forget_fills(before)

    def _forget_fills(self, before: dict[int, int]) -> None:
        """Drop the kept fills that the change of ``left`` from ``before`` affects.

        A fill of a type takes ``min(left, what fits)`` of each class, and never more of
        it than fits in an empty bin of that type (``_Tables.fits_of``); a change of ``left``
        above that changes nothing.
        """
        for i, old in before.items():
            new = self.left[i]
            for kind, most in self.tables.fits_of[i]:
                if min(old, most) != min(new, most):
                    for fill in FILLS:
                        self.fills.pop((kind, fill), None)

    # --- local search ---------------------------------------------------------------

    def improve(self) -> None:
        """Phase 4: run every move until a pass changes nothing."""
        for _ in range(MAX_PASSES):
            changed = self._downsize_all()
            changed |= self._eliminate_worst()
            changed |= self._merge_worst()
            changed |= self._repack_worst()
            if not changed:
                return

    def _movable(self) -> list[Bin]:
        """New bins that local search may change, least cost-effective first."""
        movable = [b for b in self.bins if not b.type.fixed and not b.sealed]
        return sorted(movable, key=lambda b: (b.worth / b.type.price if b.type.price
                                              else math.inf, b.type.index))

    def _cheapest_for(self, contents: dict[int, int], load: tuple[int, int, int],
                      old: Sequence[BinType], below: float) -> BinType | None:
        """The cheapest type priced under ``below`` that may hold ``contents`` in place of
        the bins of ``old``."""
        allowed = set.intersection(*(set(self.classes[i].types) for i in contents))
        cores, memory, gpus = load
        best: BinType | None = None
        for t in allowed:
            kind = self.types[t]
            if (kind.fixed or kind.price >= below - EPSILON or kind.cores < cores
                    or kind.memory < memory or kind.gpus < gpus):
                continue
            if best is not None and (kind.price, kind.index) >= (best.price, best.index):
                continue
            if self.room.allows_swap(old, kind):
                best = kind
        return best

    def _downsize_all(self) -> bool:
        changed = False
        seen: dict[tuple[int, tuple[tuple[int, int], ...]], BinType | None] = {}
        for bin_ in self.bins:
            if bin_.type.fixed or bin_.sealed:
                continue
            key = (bin_.type.index, tuple(sorted(bin_.contents.items())))
            if key not in seen or seen[key] is not None:
                seen[key] = self._cheapest_for(bin_.contents, bin_.load(), [bin_.type],
                                               bin_.type.price)
            cheaper = seen[key]
            if cheaper is not None:
                self.room.take(bin_.type, -1)
                self.room.take(cheaper)
                bin_.retype(cheaper)
                changed = True
        return changed

    def _eliminate_worst(self) -> bool:
        changed = False
        for victim in self._movable()[:WORST_BINS]:
            if self._eliminate(victim):
                changed = True
        return changed

    def _eliminate(self, victim: Bin) -> bool:
        """Move every item of ``victim`` into room left on other bins, then close it."""
        if any(self.classes[i].exclusive for i in victim.contents):
            return False
        sizes = [self.tables.sizes[i] for i in victim.contents]
        cores, memory, gpus = (min(size[d] for size in sizes) for d in range(3))
        others = [b for b in self.bins if b is not victim and not b.sealed
                  and b.free_cores >= cores and b.free_memory >= memory and b.free_gpus >= gpus]
        need = victim.load()
        if (sum(b.free_cores for b in others) < need[0]
                or sum(b.free_memory for b in others) < need[1]
                or sum(b.free_gpus for b in others) < need[2]):
            return False
        spare = {id(b): [b.free_cores, b.free_memory, b.free_gpus] for b in others}
        moves: dict[tuple[int, int], int] = {}
        by_id = {id(b): b for b in others}
        for i, count in sorted(victim.contents.items(), key=lambda kv: -self.value[kv[0]]):
            item = self.classes[i]
            for other in others:
                if not count:
                    break
                if other.type.index not in item.types:
                    continue
                free = spare[id(other)]
                moved = min(count, fit(item, free[0], free[1], free[2],
                                       other.contents.get(i, 0) + moves.get((id(other), i), 0)))
                if moved:
                    moves[(id(other), i)] = moves.get((id(other), i), 0) + moved
                    free[0] -= moved * item.cores
                    free[1] -= moved * item.memory
                    free[2] -= moved * item.gpus
                    count -= moved
            if count:
                return False
        for (taker, i), moved in moves.items():
            by_id[taker].add(self.classes[i], moved, self.value[i])
        self._close([victim])
        return True

    def _merge_worst(self) -> bool:
        worst = self._movable()[:WORST_BINS]
        closed: set[int] = set()
        changed = False
        for a_index, a in enumerate(worst):
            for b in worst[a_index + 1:]:
                if id(a) in closed or id(b) in closed:
                    continue
                contents = dict(a.contents)
                for i, count in b.contents.items():
                    contents[i] = contents.get(i, 0) + count
                if any(count > self.classes[i].per_bin for i, count in contents.items()):
                    continue
                load = tuple(x + y for x, y in zip(a.load(), b.load(), strict=True))
                kind = self._cheapest_for(contents, (load[0], load[1], load[2]),
                                          [a.type, b.type], a.type.price + b.type.price)
                if kind is None:
                    continue
                self._close([a, b])
                merged = Bin.empty(kind)
                for i, count in contents.items():
                    merged.add(self.classes[i], count, self.value[i])
                self.bins.append(merged)
                self.room.take(kind)
                closed.update((id(a), id(b)))
                changed = True
        return changed

    def _repack_worst(self) -> bool:
        """Pack the items of the least cost-effective bins again; keep it if cheaper."""
        changed = False
        for size in REPACK_SIZES:
            worst = self._movable()[:size]
            if len(worst) < 2:
                return changed
            left = [0] * len(self.classes)
            for bin_ in worst:
                for i, count in bin_.contents.items():
                    left[i] += count
            room = self.room.copy()
            for bin_ in worst:
                room.take(bin_.type, -1)
            trial = _Packer(self.tables, room, left)
            trial.construct()
            trial._downsize_all()
            if any(trial.left) or (sum(b.type.price for b in trial.bins)
                                   >= sum(b.type.price for b in worst) - EPSILON):
                continue
            self._close(worst)
            self.bins.extend(trial.bins)
            self.room = trial.room
            changed = True
        return changed

    def _close(self, bins: Iterable[Bin]) -> None:
        for bin_ in list(bins):
            self.bins.remove(bin_)
            self.room.take(bin_.type, -1)
