"""The runner: advances every active workflow, one decision loop for the whole cluster.

The loop wakes on every event (a task started or ended, a transfer finished, a
workflow was submitted or cancelled) and at least every second. Each pass it,
for each workflow that changed: creates its volumes and starts their ingress; asks
the DAG (:mod:`fuzz.orchestrate.workflows.dag`) which tasks to queue and which will
never run; once every task is final, runs the egress and finishes the workflow. Then
it places the queued tasks of all workflows onto nodes in one scheduler call
(:mod:`fuzz.scheduler.placement`). The passes over large workflows, and a round on many
nodes, come no more often than :data:`ADVANCE_PACE` allows (every workflow passes, and
a round runs, at least once a second). Each placed attempt goes to a worker thread
(:mod:`fuzz.orchestrate.workflows.tasks`). A second thread watches the volumes of
running tasks and stops those past the volume limit
(:mod:`fuzz.orchestrate.workflows.quotas`).

Every change is written to the store before the action it announces (reports no action
depends on go with the next write, or at the latest a second later), so after a
crash :meth:`Runner.start` re-adopts the containers of attempts in flight, restarts
interrupted transfers, and never runs a task that had succeeded again.

Every couple of seconds a sweep, in a worker, removes what attempts left on nodes that
answer again, looks at the nodes that refused a lease, and now and then searches every
node for containers of this orchestrator no attempt owns (see
:mod:`~fuzz.orchestrate.workflows.agentcalls`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fuzz.orchestrate.cluster.nodes import NodeDirectory
from fuzz.orchestrate.records import WorkflowRecord
from fuzz.orchestrate.secrets import SecretStore
from fuzz.orchestrate.store import DiskFullError, Store
from fuzz.orchestrate.workflows.base import RunnerSettings
from fuzz.orchestrate.workflows.drain import DrainSteps
from fuzz.orchestrate.workflows.lifecycle import LifecycleSteps
from fuzz.orchestrate.workflows.quotas import QuotaSteps
from fuzz.orchestrate.workflows.tasks import TaskExecutor
from fuzz.orchestrate.workflows.workflow import container_prefix

log = logging.getLogger(__name__)

TICK = 1.0
COALESCE = 0.005  # after a wake-up, let the events of the same moment arrive first
SWEEP_INTERVAL = 2.0  # how often leftovers on nodes and refusing nodes are looked at
ORPHAN_INTERVAL = 30.0  # how often every node is searched for containers no attempt owns
# The workflows' next passes, and the next scheduling round, wait this many times as long
# as the last ones took: the DAG passes over task arrays of thousands, and the node views
# of thousands of nodes, at every event, would take the loop whole (a pass or a round then
# carries more changes); small workflows' passes, a small cluster's round, are quick
# enough that they do not wait at all.
ADVANCE_PACE = 4.0


class Runner(DrainSteps, LifecycleSteps, QuotaSteps):
    """Runs workflows; thread-safe; the service calls it, worker threads report to it."""

    def __init__(self, store: Store, nodes: NodeDirectory, secrets: SecretStore,
                 settings: RunnerSettings, clock: Callable[[], float] = time.time) -> None:
        """Prepare (nothing runs until :meth:`start`)."""
        super().__init__(store, nodes, secrets, settings, clock)
        self._executor = TaskExecutor(nodes, self, log_headroom=settings.log_headroom)
        self._thread = threading.Thread(target=self._loop, name="runner", daemon=True)
        self._quota_thread = threading.Thread(target=self._watch_quotas, name="volume-limits",
                                              daemon=True)
        self._sweeping = threading.Event()  # a sweep runs (one at a time)

    def start(self) -> None:
        """Load unfinished workflows, re-adopt their attempts, and start the loop."""
        unfinished = [record for record in self._store.load(WorkflowRecord, order_by="created")
                      if not record.finished_state]
        if unfinished:
            log.info("resuming %d unfinished workflow(s): %s", len(unfinished),
                     ", ".join(record.id for record in unfinished))
        for record in unfinished:
            self._resume(record)
        self._thread.start()
        self._quota_thread.start()

    def stop(self) -> None:
        """Stop the loop; attempts in flight keep running on their nodes."""
        self._stopping.set()
        self._executor.stop()
        self._wake.set()
        for thread in (self._thread, self._quota_thread):
            if thread.is_alive():
                thread.join()
        try:
            self._store.flush()  # the last reports nobody waited for
        except Exception as exc:  # a restart concludes from what is on record
            log.error("the last reports could not be written: %s", exc)
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._movers.shutdown(wait=False, cancel_futures=True)

    def _sweep(self, orphans: bool) -> None:
        """Clean up what attempts left on nodes that answer again, and with ``orphans``
        what no attempt owns (outside the loop: it calls agents); a node that has room
        again is scheduled onto at the next round."""
        try:
            self._executor.sweep((container_prefix(self._settings.instance),
                                  self._live_containers) if orphans else None)
        except Exception:
            log.exception("sweeping the nodes failed")
        finally:
            self._sweeping.clear()

    def _live_containers(self) -> set[str]:
        """The containers of every attempt in flight."""
        with self._lock:
            return {container for workflow in self._active.values()
                    for plan in workflow.plans.values() for container in plan.containers}

    def _loop(self) -> None:
        last_round = last_full = last_sweep = last_flush = 0.0
        last_orphans = -ORPHAN_INTERVAL  # the first sweep looks for orphans
        paced_until = 0.0  # when the first of what its pace held back may run again
        passes_paced_until = round_paced_until = 0.0  # the workflows' passes; the round
        while not self._stopping.is_set():
            if self._wake.wait(max(min(TICK, paced_until - time.monotonic()), 0.0)):
                time.sleep(COALESCE)
            self._wake.clear()
            try:
                if time.monotonic() - last_flush >= TICK:  # what no later write carried
                    last_flush = time.monotonic()
                    self._store.flush()  # outside the lock: it writes
                with self._lock:
                    now = time.monotonic()
                    full = now - last_full >= TICK  # every workflow, now and then
                    last_full = now if full else last_full
                    paced_until = now + TICK
                    dirty = [w for w in self._active.values() if w.dirty or full]
                    if dirty and (full or passes_paced_until <= now):
                        for workflow in dirty:
                            workflow.dirty = False
                            self._advance(workflow)
                        ended = time.monotonic()
                        passes_paced_until = ended + ADVANCE_PACE * (ended - now)
                    elif dirty:
                        paced_until = min(paced_until, passes_paced_until)
                    if (self._reschedule and round_paced_until <= now) or \
                            now - last_round >= TICK:
                        self._reschedule = False
                        last_round = began = time.monotonic()
                        self._schedule()
                        ended = time.monotonic()
                        round_paced_until = ended + ADVANCE_PACE * (ended - began)
                    elif self._reschedule:
                        paced_until = min(paced_until, round_paced_until)
                    if now - last_sweep >= SWEEP_INTERVAL and not self._sweeping.is_set():
                        last_sweep = now
                        orphans = now - last_orphans >= ORPHAN_INTERVAL
                        last_orphans = now if orphans else last_orphans
                        self._sweeping.set()
                        self._workers.submit(self._sweep, orphans)
            except DiskFullError as exc:  # one line: the disk, not the code, is at fault
                log.error("runner pass failed: %s", exc)
            except Exception:  # the loop must outlive any one bad decision
                log.exception("runner pass failed")
