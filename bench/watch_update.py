"""Benchmark: the CPU one ``WatchWorkflow`` update costs the orchestrator, by task count.

Each update of a watch (``fuzz workflow start --wait``, ``status --watch``, the web
UI's live status) copies the run's records under the runner's lock, builds the
``Workflow`` message and serializes it. Measured on real ``TaskRecord``s of one task
array, two of which change between updates, taking turns in the same run:

- a full build, as every update was built before (``copy.copy`` of each task, every
  task's message built again);
- a watcher's update now (the snapshot's shallow copy, the watcher's kept messages:
  only the two changed tasks are built).

Prints the median CPU time (``time.thread_time``) of each at 300, 1,500 and 10,000
tasks and the speedup; the last line is the BENCH figure at 1,500 tasks.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable

from fuzz.orchestrate.messages import TaskMessages, workflow_message
from fuzz.orchestrate.records import TaskRecord, WorkflowRecord
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.workflows.base import WorkflowSnapshot
from fuzz.orchestrate.workflows.reports import _shallow_copy

SIZES = (300, 1500, 10_000)
ROUNDS = 15


def update_cpu_ms(tasks: list[TaskRecord], copier: Callable[[TaskRecord], TaskRecord],
                  kept: TaskMessages | None) -> float:
    """Median CPU milliseconds of an update (two tasks changed before each)."""
    record = WorkflowRecord(id="run-1", name="throughput", run=1, owner="alice",
                            file_name="throughput.yaml", fuzzfile="version: v1\n",
                            content_hash="h")
    spent = []
    for n in range(ROUNDS):
        tasks[n % len(tasks)].attempt += 1
        tasks[(7 * n) % len(tasks)].state = TaskState.RUNNING
        started = time.thread_time()
        snapshot = WorkflowSnapshot(copy.copy(record), [], [], [],
                                    [copier(t) for t in sorted(tasks, key=lambda t: t.seq)])
        workflow_message(snapshot, kept).SerializeToString()
        spent.append(time.thread_time() - started)
    return statistics.median(spent) * 1e3


def main() -> int:
    """Measure each size, print the figures and the BENCH line."""
    speedup = 0.0
    for size in SIZES:
        tasks = [TaskRecord("run-1", f"noop[{n}]", "noop", n, n, nodes=["node-1"])
                 for n in range(1, size + 1)]
        kept = TaskMessages()
        update_cpu_ms(tasks, _shallow_copy, kept)  # the watch's first update builds them all
        full = update_cpu_ms(tasks, copy.copy, None)
        watched = update_cpu_ms(tasks, _shallow_copy, kept)
        print(f"{size:>6} tasks: full build {full:7.2f} ms CPU, watcher's update "
              f"{watched:6.2f} ms CPU ({full / watched:.1f}x)")
        if size == 1500:
            speedup = full / watched
    print(f"BENCH watch_update_speedup_1500_tasks={speedup:.1f} x target>=3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
