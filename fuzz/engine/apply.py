"""Apply: carry out a plan through provider operations, recording every step in state.

The engine records intent before each provider create (a pending create with its
client token) and the outcome after it, through the injected ``persist``
callable. A crash at any moment therefore leaves state that the next refresh can
resolve: the pending create is adopted if the provider has it, resumed if not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from fuzz.engine.graph import run_graph
from fuzz.engine.model import Action, Change, DesiredNode, Plan, RecordedNode, State, client_token
from fuzz.engine.refresh import observed_attributes
from fuzz.errors import FuzzError, StalePlanError
from fuzz.plugin.provider import NodeObservation

Phase = Literal["start", "done", "failed", "skipped"]


class NodeOperations(Protocol):
    """What apply needs from the providers (implemented by the provider gateway)."""

    def create(self, node: DesiredNode, token: str) -> NodeObservation:
        """Create ``node`` idempotently by ``token`` and return it as observed."""
        ...

    def delete(self, record: RecordedNode) -> None:
        """Delete the recorded node; succeed if it is already gone."""
        ...


@dataclass(frozen=True)
class ApplyEvent:
    """Progress of one change, for the CLI to show."""

    address: str
    action: Action
    phase: Phase
    elapsed: float = 0.0
    message: str = ""


@dataclass
class ApplyResult:
    """The state after apply and what happened to each change."""

    state: State
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def check_plan_current(plan: Plan, state: State) -> None:
    """Refuse a saved plan made against another lineage or an older serial of state."""
    if plan.lineage != state.lineage:
        raise StalePlanError(
            f"plan is stale: it was made for state lineage {plan.lineage}, "
            f"but state has lineage {state.lineage}; run fuzz plan again"
        )
    if plan.serial != state.serial:
        raise StalePlanError(
            f"plan is stale: it was made at state serial {plan.serial}, "
            f"state is now at serial {state.serial}; run fuzz plan again"
        )


def plan_dependencies(plan: Plan) -> dict[str, set[str]]:
    """Creates wait for the deletes of the same provider, freeing quota and machines first."""
    deletes: dict[str, set[str]] = {}
    for change in plan.changes:
        if change.action is Action.DELETE and change.before is not None:
            deletes.setdefault(change.before.provider, set()).add(change.address)
    dependencies: dict[str, set[str]] = {}
    for change in plan.changes:
        if change.action in (Action.CREATE, Action.REPLACE) and change.after is not None:
            dependencies[change.address] = deletes.get(change.after.provider, set())
    return dependencies


class _Applier:
    """Carries out the changes of one plan, persisting state after every step."""

    def __init__(
        self,
        state: State,
        operations: NodeOperations,
        persist: Callable[[State], State],
        on_event: Callable[[ApplyEvent], None],
    ) -> None:
        self.state = state.copy()
        self.operations = operations
        self.persist = persist
        self.on_event = on_event
        self.mutex = threading.Lock()

    def record(self, address: str, node: RecordedNode | None) -> None:
        """Set (or remove) one resource and persist the whole state, serially."""
        with self.mutex:
            if node is None:
                self.state.resources.pop(address, None)
            else:
                self.state.resources[address] = node
            self.state = self.persist(self.state)

    def run(self, change: Change) -> None:
        """Carry out one change, reporting start and finish."""
        started = time.monotonic()
        self.on_event(ApplyEvent(change.address, change.action, "start"))
        try:
            if change.action is Action.DELETE:
                self._delete(change)
            elif change.action is Action.UPDATE:
                self._update(change)
            else:
                if change.before is not None and change.generation != change.before.generation:
                    # A replacement, or a node that is gone (drift): remove what is left
                    # of the old generation first, so no remains outlive their record.
                    self.operations.delete(change.before)
                self._create(change)
        except BaseException as exc:
            self.on_event(ApplyEvent(change.address, change.action, "failed",
                                     time.monotonic() - started, describe_error(exc)))
            raise
        self.on_event(ApplyEvent(change.address, change.action, "done",
                                 time.monotonic() - started,
                                 self._done_message(change.address)))

    def _done_message(self, address: str) -> str:
        with self.mutex:
            node = self.state.resources.get(address)
        return f"id={node.provider_id}" if node and node.provider_id else ""

    def _create(self, change: Change) -> None:
        want = change.after
        assert want is not None
        token = client_token(self.state.lineage, change.address, change.generation)
        pending = RecordedNode(
            address=change.address, pool=want.pool, provider=want.provider, kind=want.kind,
            status="pending_create", generation=change.generation, client_token=token,
            offering=want.offering, attributes=dict(want.attributes), labels=dict(want.labels),
        )
        self.record(change.address, pending)
        obs = self.operations.create(want, token)
        self.record(change.address, replace(
            pending, status="created", provider_id=obs.provider_id,
            observed=observed_attributes(obs),
        ))

    def _delete(self, change: Change) -> None:
        assert change.before is not None
        self.operations.delete(change.before)
        if not change.orphan:
            self.record(change.address, None)

    def _update(self, change: Change) -> None:
        assert change.before is not None and change.after is not None
        self.record(change.address, replace(change.before, labels=dict(change.after.labels)))


def describe_error(exc: BaseException) -> str:
    """One line for a failed change: the message of a FuzzError, else the exception type too."""
    if isinstance(exc, FuzzError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def apply_plan(
    plan: Plan,
    state: State,
    operations: NodeOperations,
    persist: Callable[[State], State],
    *,
    parallelism: int = 10,
    on_event: Callable[[ApplyEvent], None] = lambda event: None,
    cancel: threading.Event | None = None,
) -> ApplyResult:
    """Carry out ``plan`` against ``state`` (which must be the state it was made from).

    ``persist`` stores a state and returns it with its new serial; it is called
    under a lock, once before and once after every provider create, and after
    every delete and update. Changes run as a dependency graph, at most
    ``parallelism`` at once; a failed change does not stop independent ones.
    """
    check_plan_current(plan, state)
    applier = _Applier(state, operations, persist, on_event)
    changes = {c.address: c for c in plan.changes}
    tasks = {address: (lambda c=change: applier.run(c)) for address, change in changes.items()}
    outcome = run_graph(tasks, plan_dependencies(plan), parallelism, cancel)
    for address in outcome.skipped:
        on_event(ApplyEvent(address, changes[address].action, "skipped",
                            message="a change it depends on failed, or apply was cancelled"))
    return ApplyResult(
        state=applier.state,
        succeeded=list(outcome.succeeded),
        failed={a: describe_error(e) for a, e in outcome.failed.items()},
        skipped=list(outcome.skipped),
    )
