"""The cheapest bins for items of a few shapes: the engine behind :mod:`fuzz.scheduler.offerings`.

This is variable-sized, three-dimensional (cores, memory, GPUs) bin packing with
prices: items come in *classes* of one shape, bins in *types* (one offering of one
pool) with a price, and the goal is the lowest total price. The problem is NP-hard;
:func:`pack` is a heuristic in four phases, written here because no maintained
pure-Python library solves it within the elastic loop's budget (integer
programming takes seconds; this takes milliseconds). Phases 1-3 are in
:mod:`~fuzz.scheduler.greedy`, phase 4 in :mod:`~fuzz.scheduler.search`, the
types in :mod:`~fuzz.scheduler.bins`:

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
   :data:`~fuzz.scheduler.greedy.BALANCE_CLASSES` classes and only on types whose
   bound on the value of one bin could beat the best ratio found. Fills are kept
   from step to step until the classes they depend on change.
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

from collections.abc import Sequence

from fuzz.scheduler.bins import BinType, ItemClass, Limits, Packing, Room
from fuzz.scheduler.greedy import Packer, Tables
from fuzz.scheduler.search import improve


def pack(classes: Sequence[ItemClass], types: Sequence[BinType], limits: Limits) -> Packing:
    """Place the items of ``classes`` on fixed bins and new bins of ``types`` as cheaply as
    the heuristic of this module finds, within ``limits``.

    ``classes[i].index`` must be ``i`` and ``types[j].index`` must be ``j``.
    """
    packer = Packer(Tables(classes, types), Room.of(limits), [c.count for c in classes])
    packer.fill_fixed()
    packer.construct()
    improve(packer)
    return Packing(tuple(packer.bins), tuple(packer.left))
