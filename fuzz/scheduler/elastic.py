"""One decision of the elastic loop, for every elastic pool: who stays, who goes, who is added.

Pure: the orchestrator (:mod:`fuzz.orchestrate.cluster.elastic`) gathers the inputs (the
pools, their recorded members and what is known of each, the jobs no node could
take) and carries the answer out through the engine. Rules, per pool:

* **Boot timeout**: a member that has not joined ``boot_timeout`` after its
  current generation was first seen is replaced (a new generation, so a new
  client token); after ``boot_retries`` replacements it is removed instead and
  the pool is marked failing with the reason.
* **Idle release**: a joined member without leases or tasks for ``idle_ttl`` is
  first marked draining (the scheduler stops placing there), and removed from
  the membership on a later pass if still idle; never below ``min``, and
  ``standby`` idle members are kept.
* **Growth**: the jobs are handed to :func:`~fuzz.scheduler.offerings.choose_offerings`
  with the members that have not joined and the idle joined ones as booting
  nodes (they are filled first); new members take the lowest free indexes.
  ``standby`` adds idle members up to its count. A failing pool does not grow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fuzz.engine.desired import free_addresses
from fuzz.plugin.provider import Offering
from fuzz.scheduler.offerings import (
    BootingNode,
    ElasticPool,
    OfferingChoice,
    QueuedJob,
    choose_offerings,
    offering_capacity,
)


@dataclass(frozen=True)
class PoolRules:
    """An elastic pool as the loop sees it: its spec's limits and timings, its offerings."""

    name: str
    offerings: Sequence[Offering]
    min: int
    max: int
    standby: int = 0
    idle_ttl: float = 600.0
    boot_timeout: float = 600.0
    boot_retries: int = 3
    labels: Mapping[str, str] = field(default_factory=dict)
    failing: str = ""  # why the pool was marked failing ("" when it is not)


@dataclass(frozen=True)
class Member:
    """A recorded member of an elastic pool, and what the orchestrator knows of it."""

    address: str
    offering: str | None
    generation: int
    joined: bool = False
    busy: bool = False  # it holds leases or tasks
    draining: bool = False


@dataclass(frozen=True)
class MemberTimes:
    """What the loop remembers of a member between passes (kept in the store)."""

    generation: int
    since: float  # when this generation was first seen
    replacements: int = 0
    idle_since: float = 0.0  # 0: busy, or not joined


@dataclass(frozen=True)
class PoolDecision:
    """What to do with one pool now.

    ``membership``: address → offering for the engine; ``replace``: members to
    create again; ``drain``: members to mark draining; ``released``: drained members
    left out of ``membership``; ``failing``: why the pool is failing ("" if not).
    """

    membership: Mapping[str, str | None]
    replace: tuple[str, ...] = ()
    drain: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    failing: str = ""


@dataclass(frozen=True)
class ElasticDecision:
    """One pass: a decision per pool, the members' times, and the chooser's verdict on jobs."""

    pools: Mapping[str, PoolDecision]
    times: Mapping[str, MemberTimes]
    choice: OfferingChoice


def decide(
    pools: Sequence[PoolRules],
    members: Mapping[str, Sequence[Member]],
    times: Mapping[str, MemberTimes],
    jobs: Sequence[QueuedJob],
    now: float,
) -> ElasticDecision:
    """Decide every pool (see the module documentation); ``members`` by pool name."""
    new_times: dict[str, MemberTimes] = {}
    kept: dict[str, dict[str, Member]] = {}
    partial: dict[str, PoolDecision] = {}
    for pool in pools:
        mine = members.get(pool.name, ())
        for member in mine:
            new_times[member.address] = _times(member, times.get(member.address), now)
        partial[pool.name], kept[pool.name] = _shrink(pool, mine, new_times, now)
    choice = choose_offerings(jobs, [_chooser_pool(p, partial[p.name], kept[p.name])
                                     for p in pools],
                              [node for p in pools for node in _booting(p, kept[p.name])])
    decided = {pool.name: _grow(pool, partial[pool.name], kept[pool.name], choice)
               for pool in pools}
    return ElasticDecision(decided, new_times, choice)


def _times(member: Member, known: MemberTimes | None, now: float) -> MemberTimes:
    if known is None or known.generation != member.generation:
        replacements = known.replacements if known is not None else 0
        known = MemberTimes(member.generation, now, replacements)
    idle = member.joined and not member.busy
    if not idle:
        return replace(known, idle_since=0.0)
    return known if known.idle_since else replace(known, idle_since=now)


def _shrink(pool: PoolRules, members: Sequence[Member], times: dict[str, MemberTimes],
            now: float) -> tuple[PoolDecision, dict[str, Member]]:
    """Boot timeouts and idle release; the members that stay."""
    kept = {m.address: m for m in members}
    replaced: list[str] = []
    failing = pool.failing
    for member in members:
        when = times[member.address]
        if member.joined or now - when.since < pool.boot_timeout:
            continue
        if when.replacements < pool.boot_retries and not failing:
            replaced.append(member.address)
            times[member.address] = replace(when, replacements=when.replacements + 1, since=now)
            continue
        del kept[member.address]
        failing = failing or (
            f"pool {pool.name}: node {member.address} did not join within "
            f"{pool.boot_timeout:g}s after {when.replacements} replacement(s)")
    idle = sorted((m for m in kept.values() if m.joined and not m.busy),
                  key=lambda m: times[m.address].idle_since)
    spare = min(len(kept) - pool.min, len(idle) - pool.standby)
    drain: list[str] = []
    released: list[str] = []
    for member in idle:
        if spare <= 0:
            break
        if now - times[member.address].idle_since < pool.idle_ttl:
            continue
        spare -= 1
        if member.draining:
            released.append(member.address)
            del kept[member.address]
        else:
            drain.append(member.address)
    return PoolDecision({}, tuple(replaced), tuple(drain), tuple(released), failing), kept


def _chooser_pool(pool: PoolRules, partial: PoolDecision, kept: Mapping[str, Member]
                  ) -> ElasticPool:
    """The pool for the chooser; a failing one is full (its jobs wait, they do not fail)."""
    most = max(pool.max, len(kept))
    return ElasticPool(pool.name, pool.offerings, most, most if partial.failing else len(kept),
                       pool.labels)


def _booting(pool: PoolRules, kept: Mapping[str, Member]) -> list[BootingNode]:
    """Members that may still take jobs before anything is added: not joined, or idle."""
    by_name = {offering.name: offering for offering in pool.offerings}
    nodes = []
    for member in kept.values():
        offering = by_name.get(member.offering or "")
        if offering is None or member.draining or (member.joined and member.busy):
            continue
        nodes.append(BootingNode(member.address, offering_capacity(offering, pool.labels)))
    return nodes


def _grow(pool: PoolRules, partial: PoolDecision, kept: Mapping[str, Member],
          choice: OfferingChoice) -> PoolDecision:
    membership: dict[str, str | None] = {m.address: m.offering for m in kept.values()}
    wanted = [new.offering for new in choice.add if new.pool == pool.name for _ in range(new.count)]
    promised = {name for names in choice.placements.values() for name in names}
    idle = sum(1 for m in kept.values()
               if not m.busy and not m.draining and m.address not in promised)
    if pool.standby > idle and pool.offerings:
        wanted += [pool.offerings[0].name] * (pool.standby - idle)
    if partial.failing:
        wanted = []
    wanted = wanted[:max(pool.max - len(membership), 0)]
    taken = set(membership) | set(partial.released)
    for address, offering in zip(free_addresses(pool.name, taken, len(wanted)), wanted,
                                 strict=True):
        membership[address] = offering
    return replace(partial, membership=membership)
