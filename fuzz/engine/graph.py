"""Run a dependency graph of tasks with bounded parallelism.

Why our own and not a library: the standard library's ``graphlib`` gives the
order, and ``concurrent.futures`` the threads; this module only joins the two,
skipping the dependents of a failed task and stopping cleanly on cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter


@dataclass
class GraphResult:
    """Which tasks succeeded, failed (with their exception) or never ran."""

    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def run_graph(
    tasks: Mapping[str, Callable[[], None]],
    dependencies: Mapping[str, set[str]],
    parallelism: int,
    cancel: threading.Event | None = None,
) -> GraphResult:
    """Run every task after the tasks it depends on, at most ``parallelism`` at once.

    A task whose dependency failed or was skipped is skipped. When ``cancel`` is
    set, tasks not yet started are skipped and running ones finish.
    """
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for key in tasks:
        sorter.add(key, *(d for d in dependencies.get(key, set()) if d in tasks))
    sorter.prepare()
    result = GraphResult()
    blocked: set[str] = set()
    running: dict[Future[None], str] = {}
    with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="apply") as pool:
        ready: list[str] = list(sorter.get_ready())
        while ready or running:
            while ready and len(running) < parallelism:
                key = ready.pop(0)
                deps = dependencies.get(key, set())
                if (cancel is not None and cancel.is_set()) or deps & blocked:
                    blocked.add(key)
                    result.skipped.append(key)
                    sorter.done(key)
                    ready.extend(sorter.get_ready())
                    continue
                running[pool.submit(tasks[key])] = key
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                error = future.exception()
                if error is None:
                    result.succeeded.append(key)
                else:
                    result.failed[key] = error
                    blocked.add(key)
                sorter.done(key)
            ready.extend(sorter.get_ready())
    return result
