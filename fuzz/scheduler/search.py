"""Phase 4 of :mod:`fuzz.scheduler.packing`: local search over the bins the greedy opened.

Moves, each on the least cost-effective bins (value of their items per price):
*downsize* a bin to the cheapest type that holds its load; *eliminate* a bin by
moving its items into room left on others; *merge* two bins onto one cheaper bin;
*repack* the items of a few bins from scratch. Limits are kept throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fuzz.scheduler.bins import EPSILON, Bin, BinType, fit
from fuzz.scheduler.greedy import Packer

MAX_PASSES = 8
"""Local search passes at most (each pass runs every move once)."""
WORST_BINS = 12
"""How many of the least cost-effective bins the eliminate and merge moves try."""
REPACK_SIZES = (3, 6)
"""How many of the least cost-effective bins the repack move packs again, in turn."""


def improve(packer: Packer) -> None:
    """Run every move on ``packer``'s bins until a pass changes nothing."""
    _Search(packer).improve()


class _Search:
    """The moves, on one packer's bins."""

    def __init__(self, packer: Packer) -> None:
        self.packer = packer

    def improve(self) -> None:
        """Run every move until a pass changes nothing."""
        for _ in range(MAX_PASSES):
            changed = self.downsize_all()
            changed |= self._eliminate_worst()
            changed |= self._merge_worst()
            changed |= self._repack_worst()
            if not changed:
                return

    def _movable(self) -> list[Bin]:
        """New bins that the moves may change, least cost-effective first."""
        movable = [b for b in self.packer.bins if not b.type.fixed and not b.sealed]
        return sorted(movable, key=lambda b: (b.worth / b.type.price if b.type.price
                                              else math.inf, b.type.index))

    def _cheapest_for(self, contents: dict[int, int], load: tuple[int, int, int],
                      old: Sequence[BinType], below: float) -> BinType | None:
        """The cheapest type priced under ``below`` that may hold ``contents`` (of ``load``)
        in place of the bins of ``old``."""
        packer = self.packer
        allowed = set.intersection(*(set(packer.classes[i].types) for i in contents))
        cores, memory, gpus = load
        best: BinType | None = None
        for t in allowed:
            kind = packer.types[t]
            if (kind.fixed or kind.price >= below - EPSILON or kind.cores < cores
                    or kind.memory < memory or kind.gpus < gpus):
                continue
            if best is not None and (kind.price, kind.index) >= (best.price, best.index):
                continue
            if packer.room.allows_swap(old, kind):
                best = kind
        return best

    def downsize_all(self) -> bool:
        """Move every bin to the cheapest type that holds its load, if cheaper."""
        room = self.packer.room
        changed = False
        seen: dict[tuple[int, tuple[tuple[int, int], ...]], BinType | None] = {}
        for bin_ in self.packer.bins:
            if bin_.type.fixed or bin_.sealed:
                continue
            key = (bin_.type.index, tuple(sorted(bin_.contents.items())))
            if key not in seen or seen[key] is not None:  # a swap may have used the room
                seen[key] = self._cheapest_for(bin_.contents, bin_.load(), [bin_.type],
                                               bin_.type.price)
            cheaper = seen[key]
            if cheaper is not None:
                room.take(bin_.type, -1)
                room.take(cheaper)
                bin_.retype(cheaper)
                changed = True
        return changed

    def _eliminate_worst(self) -> bool:
        """Try to empty each of the least cost-effective bins into the others."""
        changed = False
        for victim in self._movable()[:WORST_BINS]:
            changed |= self._eliminate(victim)
        return changed

    def _eliminate(self, victim: Bin) -> bool:
        """Move every item of ``victim`` into room left on other bins, then close it."""
        packer = self.packer
        sizes = [packer.tables.sizes[i] for i in victim.contents]
        cores, memory, gpus = (min(size[d] for size in sizes) for d in range(3))
        others = [b for b in packer.bins if b is not victim and not b.sealed
                  and b.free_cores >= cores and b.free_memory >= memory and b.free_gpus >= gpus]
        need = victim.load()
        if (sum(b.free_cores for b in others) < need[0]
                or sum(b.free_memory for b in others) < need[1]
                or sum(b.free_gpus for b in others) < need[2]):
            return False
        spare = {id(b): [b.free_cores, b.free_memory, b.free_gpus] for b in others}
        moves: dict[tuple[int, int], int] = {}
        for i, count in sorted(victim.contents.items(), key=lambda kv: -packer.value[kv[0]]):
            item = packer.classes[i]
            for other in others:
                if not count:
                    break
                if other.type.index not in item.types:
                    continue
                free = spare[id(other)]
                held = other.contents.get(i, 0) + moves.get((id(other), i), 0)
                moved = min(count, fit(item, free[0], free[1], free[2], held))
                if moved:
                    moves[(id(other), i)] = moves.get((id(other), i), 0) + moved
                    free[0] -= moved * item.cores
                    free[1] -= moved * item.memory
                    free[2] -= moved * item.gpus
                    count -= moved
            if count:
                return False
        takers = {id(b): b for b in others}
        for (taker, i), moved in moves.items():
            takers[taker].add(packer.classes[i], moved, packer.value[i])
        packer.close([victim])
        return True

    def _merge_worst(self) -> bool:
        """Put the loads of two of the least cost-effective bins on one cheaper bin."""
        packer = self.packer
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
                if any(count > packer.classes[i].per_bin for i, count in contents.items()):
                    continue
                (a_cores, a_memory, a_gpus), (b_cores, b_memory, b_gpus) = a.load(), b.load()
                kind = self._cheapest_for(
                    contents, (a_cores + b_cores, a_memory + b_memory, a_gpus + b_gpus),
                    [a.type, b.type], a.type.price + b.type.price)
                if kind is None:
                    continue
                packer.close([a, b])
                merged = Bin.empty(kind)
                for i, count in contents.items():
                    merged.add(packer.classes[i], count, packer.value[i])
                packer.add(merged)
                closed.update((id(a), id(b)))
                changed = True
        return changed

    def _repack_worst(self) -> bool:
        """Pack the items of the least cost-effective bins again; keep it if cheaper."""
        packer = self.packer
        changed = False
        for size in REPACK_SIZES:
            worst = self._movable()[:size]
            if len(worst) < 2:
                return changed
            left = [0] * len(packer.classes)
            for bin_ in worst:
                for i, count in bin_.contents.items():
                    left[i] += count
            room = packer.room.copy()
            for bin_ in worst:
                room.take(bin_.type, -1)
            trial = Packer(packer.tables, room, left)
            trial.construct()
            _Search(trial).downsize_all()
            if any(trial.left) or (sum(b.type.price for b in trial.bins)
                                   >= sum(b.type.price for b in worst) - EPSILON):
                continue
            packer.close(worst)
            packer.bins.extend(trial.bins)
            packer.room = trial.room
            changed = True
        return changed
