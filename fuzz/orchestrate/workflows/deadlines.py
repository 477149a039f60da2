"""Actions run once their time comes, by one thread for all of them.

An attempt waiting for its container's end without a thread (:mod:`.endwatch`) still
needs a turn after :data:`~fuzz.orchestrate.workflows.tasks.WAIT_SLICE` seconds without
one (to renew its lease, ask the agent). Thousands wait at once: ``threading.Timer``
would be a thread each, and ``sched.scheduler`` cannot take a new event from another
thread while it sleeps; this is a heap and one condition, written here for that reason.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Deadlines:
    """Runs each action added with :meth:`add` once its delay has passed, in one thread.

    Actions must be short (hand work to a pool): they run one after the other. An action
    that raises is logged; the others still run. Started on the first :meth:`add`.
    """

    def __init__(self, name: str = "deadlines") -> None:
        """A thread called ``name`` will run the actions."""
        self._name = name
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties run in the order added, never compare actions
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` in ``delay`` seconds (never, once stopped)."""
        with self._changed:
            if self._stopped:
                return
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name=self._name)
                self._thread.start()
            elif self._due[0][2] is action:  # sooner than what the thread sleeps for
                self._changed.notify()

    def stop(self) -> None:
        """Drop every waiting action and end the thread."""
        with self._changed:
            self._stopped = True
            self._due.clear()
            self._changed.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and (
                        not self._due or self._due[0][0] > time.monotonic()):
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopped:
                    return
                _, _, action = heapq.heappop(self._due)
            try:
                action()
            except Exception:
                log.exception("a deadline's action failed")
