"""Pause Python's cyclic garbage collector while the engine builds large acyclic data.

Planning a 100,000-node cluster allocates hundreds of thousands of small objects
(desired nodes, refreshed records, changes) that never form reference cycles.
CPython's collector still rescans every live object at each full collection, which
makes plan time grow faster than the cluster (bench/plan_scale.py measured 3.6 us
per node at 100k against 2.1 us with collection paused). Reference counting still
frees everything as usual; only the cycle search is deferred to the end.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_depth = 0
_was_enabled = True


def _enter() -> None:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1


def _leave() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0 and _was_enabled:
            gc.enable()


def gc_paused(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` with cyclic collection paused (re-entrant and thread-safe)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _enter()
        try:
            return func(*args, **kwargs)
        finally:
            _leave()

    return wrapper
