"""Phases 1-3 of :mod:`fuzz.scheduler.packing`: fixed bins, exclusive items, and the greedy
by price per value packed, with the three fills it chooses from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from fuzz.scheduler.bins import Bin, BinType, ItemClass, Room, fit

VALUE_FIRST, DENSE_FIRST, BALANCED = "value-first", "dense-first", "balanced"
FILLS = (VALUE_FIRST, DENSE_FIRST, BALANCED)
"""The ways to fill a bin: see :meth:`Packer._pattern` and :meth:`Packer._balanced`."""
BALANCE_CLASSES = 12
"""The balanced fill (slower) is tried only for problems of at most this many classes."""

Row = tuple[int, int, int, int, int, float]
"""A class as the fill loop reads it: index, cores, memory, GPUs, per bin, value."""


class Tables:
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


class Packer:
    """One run of the heuristic over ``left`` items of the tables' classes."""

    def __init__(self, tables: Tables, room: Room, left: list[int]) -> None:
        self.tables = tables
        self.classes = tables.classes
        self.types = tables.types
        self.value = tables.value
        self.room = room
        self.left = left
        self.fills: dict[tuple[int, str], tuple[list[tuple[int, int]], float]] = {}
        self.bins: list[Bin] = []

    def fill_fixed(self) -> None:
        """Phase 1: fill each fixed bin with the most valuable items that fit."""
        for kind in self.types:
            if not kind.fixed:
                continue
            shared, shared_value = self._pattern(kind, self.tables.rows[kind.index])
            lone = self._best_exclusive(kind) if kind.idle else None
            if lone is not None and self.value[lone] >= shared_value:
                self.open(kind, [(lone, 1)], 1)
            elif shared:
                self.open(kind, shared, 1)

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
                    self.open(kind, [(i, 1)], min(self.left[i], self.room.allows(kind)))
        while (step := self._best_step()) is not None:
            kind, pattern = step
            repeat = min(min(self.left[i] // n for i, n in pattern), self.room.allows(kind))
            self.open(kind, pattern, repeat)

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

    def _pattern(self, kind: BinType, rows: Sequence[Row]) -> tuple[list[tuple[int, int]], float]:
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

    def open(self, kind: BinType, pattern: Sequence[tuple[int, int]], repeat: int) -> None:
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
        it than fits in an empty bin of that type (``Tables.fits_of``); a change of ``left``
        above that changes nothing.
        """
        for i, old in before.items():
            new = self.left[i]
            for kind, most in self.tables.fits_of[i]:
                if min(old, most) != min(new, most):
                    for fill in FILLS:
                        self.fills.pop((kind, fill), None)

    def add(self, bin_: Bin) -> None:
        """Count in a bin filled elsewhere (by a move of the local search)."""
        self.bins.append(bin_)
        self.room.take(bin_.type)

    def close(self, bins: Iterable[Bin]) -> None:
        """Take ``bins`` out, freeing their room."""
        for bin_ in list(bins):
            self.bins.remove(bin_)
            self.room.take(bin_.type, -1)
