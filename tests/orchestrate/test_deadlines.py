"""One thread runs the waiting attempts' slices (fuzz/orchestrate/workflows/deadlines.py)."""

from __future__ import annotations

import threading
import time

from fuzz.orchestrate.workflows.deadlines import Deadlines


def test_actions_run_in_the_order_of_their_time() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    done = threading.Event()
    began = time.monotonic()
    deadlines.add(0.6, lambda: (ran.append("late"), done.set()))
    deadlines.add(0.1, lambda: ran.append("soon"))  # sooner than what the thread sleeps for
    deadlines.add(0.3, lambda: 1 / 0)  # logged; the others still run
    assert done.wait(5)
    deadlines.stop()
    assert ran == ["soon", "late"]
    assert time.monotonic() - began >= 0.6


def test_stopped_deadlines_run_nothing() -> None:
    deadlines = Deadlines()
    ran: list[str] = []
    deadlines.add(0.2, lambda: ran.append("dropped"))
    deadlines.stop()
    deadlines.add(0.0, lambda: ran.append("after the stop"))
    time.sleep(0.4)
    assert ran == []
