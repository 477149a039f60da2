"""The elastic loop: the orchestrator runs the engine continuously for its elastic pools.

Every ``orchestrator.reconcile_interval`` (and soon after the runner's queue
changes) one pass, under the state lock with a short timeout (a ``fuzz apply``
holding it makes the pass wait for the next turn):

1. refresh (the providers' view of every node), recorded state written;
2. gather the pools' recorded members, what the node directory and runner know
   of them (joined, busy, draining), the tasks no node could take
   (:meth:`Runner.unplaced`) and the loop's memory (boot clocks, replacements,
   idle times: :class:`PoolMemberRecord`; failing marks: :class:`PoolStatusRecord`);
3. decide (:func:`fuzz.scheduler.elastic.decide`, pure): the membership of each
   pool, members to replace after a boot timeout, members to drain or release;
4. plan and apply that membership through the engine, limited to the elastic
   pools (static pools and orphans stay ``fuzz apply``'s business); a member it
   deletes is drained first (:mod:`fuzz.lifecycle.drain`), as ``fuzz apply``'s are;
5. report: tasks no offering can ever hold fail at once, the others' waiting
   reasons say what provisioning waits for, provider errors are kept per pool,
   released nodes are forgotten once deleted.

Everything it decides is derived from state plus the store, so a restarted
orchestrator carries on; the engine's pending creates and client tokens keep a
kill between a create and its record from leaving duplicates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fuzz.engine.apply import ApplyEvent
from fuzz.engine.model import RecordedNode, State
from fuzz.errors import FuzzError, LockError
from fuzz.lifecycle.drain import DrainSettings
from fuzz.lifecycle.gateway import ProviderGateway, provider_contexts
from fuzz.lifecycle.reconcile import PlanRequest, apply_changes, refresh_and_decide
from fuzz.lifecycle.statestore import StateStore
from fuzz.orchestrate.cluster.drainer import DirectoryDrainer
from fuzz.orchestrate.cluster.nodes import NodeDirectory, NodeUse
from fuzz.orchestrate.records import PoolMemberRecord, PoolStatusRecord
from fuzz.orchestrate.store import Store
from fuzz.plugin.loader import PluginSet
from fuzz.plugin.provider import JoinInfo, Offering
from fuzz.resources import NodeCapacity
from fuzz.scheduler.elastic import ElasticDecision, Member, MemberTimes, PoolRules, decide
from fuzz.scheduler.offerings import offering_capacity
from fuzz.spec.cluster import PoolSpec
from fuzz.spec.loader import LoadedSpec

if TYPE_CHECKING:  # only a type here: the runner imports the node directory of this package
    from fuzz.orchestrate.workflows.loop import Runner

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 2.0
MIN_GAP = 1.0  # queue changes bring a pass forward, but at most one a second
PARALLELISM = 10


@dataclass(frozen=True)
class ElasticSetup:
    """What the loop needs besides the orchestrator's own parts: the spec, plugins, state."""

    loaded: LoadedSpec
    plugins: PluginSet
    state: StateStore


@dataclass(frozen=True)
class PoolView:
    """One elastic pool as the last pass left it (what ``PoolDemand`` answers)."""

    name: str
    members: Mapping[str, str | None]  # address → offering
    states: Mapping[str, str]  # address → BOOTING, READY, DRAINING
    failing: str = ""
    error: str = ""
    error_at: float = 0.0


@dataclass
class _Pass:
    """What one pass decided, for the steps after apply."""

    decision: ElasticDecision | None = None
    members: dict[str, list[Member]] = field(default_factory=dict)
    targeted: bool = False  # some elastic pool has members or wants some


class ElasticLoop:
    """Runs the passes in a thread of its own; :meth:`pools` tells what it decided."""

    def __init__(self, setup: ElasticSetup, runner: Runner, nodes: NodeDirectory, store: Store,
                 join: Callable[[str], JoinInfo], clock: Callable[[], float] = time.time
                 ) -> None:
        """Prepare (nothing runs until :meth:`start`); ``join`` gives a new node its join info."""
        spec = setup.loaded.spec
        self._spec = spec
        self._state = setup.state
        self._pools = {name: pool for name, pool in spec.pools.items() if pool.resizes}
        self._gateway = ProviderGateway(setup.plugins, provider_contexts(setup.loaded,
                                                                         setup.plugins), join)
        self._runner = runner
        self._nodes = nodes
        self._store = store
        self._clock = clock
        self._interval = spec.orchestrator.reconcile_seconds() if spec.orchestrator else 10.0
        self._offerings: dict[str, list[Offering]] = {}
        self._views: dict[str, PoolView] = {}
        self._decided_at = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="elastic", daemon=True)
        # A member the loop deletes is drained first, as fuzz apply's nodes are (its
        # released members are idle already: the wait is for what a race placed there).
        self._drain = DrainSettings(DirectoryDrainer(nodes, runner), self._drain_timeout,
                                    lambda event: log.info("elastic: %s", event.describe()))

    @property
    def active(self) -> bool:
        """Whether the spec has pools that may grow or shrink (without, the loop does nothing)."""
        return bool(self._pools)

    def start(self) -> None:
        """Start the passes (when there are elastic pools)."""
        if self.active:
            self._thread.start()

    def stop(self) -> None:
        """Stop after the pass under way."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def pools(self) -> tuple[list[PoolView], float]:
        """Every elastic pool as the last pass left it, and when that pass ended (0: never)."""
        with self._lock:
            return [self._views[name] for name in sorted(self._views)], self._decided_at

    def offerings(self) -> list[tuple[str, Offering, NodeCapacity]]:
        """Each elastic pool's offerings (pool, offering, the capacity of one of its nodes
        with the labels it gets); a pool whose provider cannot say now is left out."""
        found = []
        for name, pool in sorted(self._pools.items()):
            try:
                offerings = self._pool_offerings(pool)
            except FuzzError as exc:
                log.warning("elastic: the offerings of pool %s: %s", name, exc)
                continue
            found += [(name, offering, offering_capacity(offering, pool.labels))
                      for offering in offerings]
        return found

    def _loop(self) -> None:
        seen = -1
        last = 0.0
        while not self._stopping.is_set():
            seen = self._runner.wait_for_change(seen, max(self._interval - (
                time.monotonic() - last), 0.0))
            if self._stopping.wait(max(min(MIN_GAP, self._interval) - (
                    time.monotonic() - last), 0.0)):
                return
            last = time.monotonic()
            self.run_once()

    def run_once(self) -> None:
        """One pass; a pass that cannot take the state lock is skipped (and logged)."""
        try:
            with self._state.lock("orchestrator elastic pass", LOCK_TIMEOUT):
                self._reconcile()
        except LockError as exc:
            log.info("elastic pass skipped, retried at the next turn: %s", exc)
        except FuzzError as exc:
            log.warning("elastic pass failed: %s", exc)
            self._record_error(list(self._pools), str(exc))
        except Exception:  # the loop must outlive any one bad pass
            log.exception("elastic pass failed")

    # --- one pass ---------------------------------------------------------------------

    def _reconcile(self) -> None:
        this = _Pass()
        plan, state = refresh_and_decide(self._spec, self._gateway, self._state,
                                         lambda recorded: self._decide(recorded, this),
                                         persist_refresh=True)
        decision = this.decision
        if decision is None:
            return
        failed: dict[str, str] = {}
        if plan.has_changes and this.targeted:
            def note(event: ApplyEvent) -> None:
                if event.phase == "failed":
                    failed[event.address] = event.message
                elif event.phase == "done":
                    log.info("elastic: %s %s", event.action.value, event.address)
            state = apply_changes(plan, state, self._gateway, self._state, PARALLELISM,
                                  note, drain=self._drain).state
        self._after(decision, this.members, state, failed, touched={
            _pool_of(change.address) for change in plan.changes})

    def _decide(self, state: State, this: _Pass) -> PlanRequest:
        """From refreshed state: the membership the engine plans with (pure decision inside)."""
        now = self._clock()
        used = self._runner.used_resources()
        joined = {record.name for record in self._nodes.records()
                  if self._nodes.reachable(record)}
        members: dict[str, list[Member]] = {name: [] for name in self._pools}
        for node in state.resources.values():
            if node.pool in members:
                members[node.pool].append(Member(
                    node.address, node.offering, node.generation, joined=node.address in joined,
                    busy=used.get(node.address, NodeUse()).tasks > 0,
                    draining=self._nodes.draining(node.address)))
        times = {record.address: MemberTimes(record.generation, record.since,
                                             record.replacements, record.idle_since)
                 for record in self._store.load(PoolMemberRecord)}
        rules = [self._rules(name, pool) for name, pool in self._pools.items()]
        decision = decide(rules, members, times, self._runner.unplaced(), now)
        this.decision, this.members = decision, members
        self._remember(decision, members)
        replace = [address for pool in decision.pools.values() for address in pool.replace]
        membership = {name: pool.membership for name, pool in decision.pools.items()}
        targets = [f"pool.{name}" for name, pool in decision.pools.items()
                   if pool.membership or members[name]]
        this.targeted = bool(targets)
        return PlanRequest(targets=targets, replace=replace, membership=membership)

    def _drain_timeout(self, record: RecordedNode) -> float:
        pool = self._spec.pools.get(record.pool)
        return pool.drain_timeout_seconds() if pool is not None else 0.0

    def _rules(self, name: str, pool: PoolSpec) -> PoolRules:
        status = self._status(name)
        failing = status.failing if status.fingerprint == self._fingerprint(name) else ""
        return PoolRules(
            name, self._pool_offerings(pool), pool.min, pool.max_nodes(), pool.standby,
            pool.idle_ttl_seconds(), pool.boot_timeout_seconds(), pool.boot_retries,
            dict(pool.labels), failing)

    def _pool_offerings(self, pool: PoolSpec) -> list[Offering]:
        """The pool's offerings as its provider describes them (asked once per provider)."""
        if pool.provider not in self._offerings:
            self._offerings[pool.provider] = self._gateway.offerings(pool.provider)
        known = self._offerings[pool.provider]
        if not pool.offerings:
            return known
        return [offering for offering in known if offering.name in pool.offerings]

    def _fingerprint(self, name: str) -> str:
        """The pool's spec and its provider block's: a change clears a failing mark."""
        pool = self._pools[name]
        block = self._spec.providers.get(pool.provider)
        text = json.dumps([pool.model_dump(mode="json"),
                           block.model_dump(mode="json") if block else None], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _status(self, name: str) -> PoolStatusRecord:
        found = self._store.load(PoolStatusRecord, pool=name)
        return found[0] if found else PoolStatusRecord(name)

    def _remember(self, decision: ElasticDecision, members: Mapping[str, list[Member]]) -> None:
        """Keep the members' times, drain marks and failing marks in the store."""
        pool_of = {m.address: name for name, listed in members.items() for m in listed}
        self._store.save(*[PoolMemberRecord(address, pool_of[address], t.generation, t.since,
                                            t.replacements, t.idle_since)
                           for address, t in decision.times.items()])
        for name, pool in decision.pools.items():
            for address in pool.drain:
                log.info("elastic: draining %s (idle past idle_ttl)", address)
                self._nodes.drain(address)
            status = self._status(name)
            if pool.failing and not status.failing:
                log.warning("elastic: %s", pool.failing)
                status.failing, status.fingerprint = pool.failing, self._fingerprint(name)
                self._store.save(status)

    def _after(self, decision: ElasticDecision, members: Mapping[str, list[Member]],
               state: State, failed: Mapping[str, str], touched: set[str]) -> None:
        """Forget deleted members, keep provider errors, tell the runner, publish views."""
        for listed in members.values():
            for member in listed:
                if member.address not in state.resources:
                    self._nodes.forget(member.address)
                    self._store.delete(PoolMemberRecord(member.address, "", 0, 0.0))
        errors: dict[str, str] = {}
        for address, message in failed.items():
            errors.setdefault(_pool_of(address), message)
        for name in self._pools:
            if name in errors:
                self._record_error([name], errors[name])
            elif name in touched and self._status(name).error:
                status = self._status(name)
                status.error, status.error_at = "", 0.0
                self._store.save(status)
        self._runner.provisioning(decision.choice.unfit, self._waiting_notes(decision))
        self._publish(decision, state)

    def _record_error(self, pools: list[str], message: str) -> None:
        for name in pools:
            self._runner.metrics.provider_error(name)
            status = self._status(name)
            status.error, status.error_at = message, self._clock()
            self._store.save(status)

    def _waiting_notes(self, decision: ElasticDecision) -> dict[str, str]:
        """What each job that no node took waits for, in provisioning's words."""
        trouble = {}
        for name in self._pools:
            status = self._status(name)
            failing = decision.pools[name].failing
            if failing:
                trouble[name] = f"pool {name} is failing: {failing}"
            elif status.error:
                trouble[name] = f"pool {name}: {status.error}"
        notes: dict[str, str] = {}
        for key, nodes in decision.choice.placements.items():
            pools = sorted({_pool_of(node) for node in nodes})
            notes[key] = "provisioning: waiting for new node(s) of pool " + ", ".join(pools)
            notes[key] += "".join(f"; {trouble[p]}" for p in pools if p in trouble)
        for key, reason in decision.choice.deferred.items():
            notes[key] = f"provisioning deferred: {reason}"
            notes[key] += "".join(f"; {why}" for why in trouble.values())
        return notes

    def _publish(self, decision: ElasticDecision, state: State) -> None:
        views = {}
        joined = {record.name for record in self._nodes.records()}
        for name, pool in decision.pools.items():
            status = self._status(name)
            recorded = {a: n.offering for a, n in state.resources.items() if n.pool == name}
            members = {**recorded, **pool.membership}
            states = {address: ("DRAINING" if self._nodes.draining(address)
                                else "READY" if address in joined else "BOOTING")
                      for address in members}
            views[name] = PoolView(name, pool.membership, states, pool.failing or status.failing,
                                   status.error, status.error_at)
        with self._lock:
            self._views = views
            self._decided_at = self._clock()


def _pool_of(address: str) -> str:
    """The pool of ``pool.NAME.node[i]`` or of a chooser's ``NAME/OFFERING#N``."""
    if "/" in address:
        return address.split("/", 1)[0]
    return address.split(".")[1] if address.startswith("pool.") else address

