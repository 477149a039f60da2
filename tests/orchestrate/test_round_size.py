"""How many queued tasks a scheduling round looks at: twice as many after a full round
that placed them all (up to the most), the first size again once one had to wait."""

from __future__ import annotations

from fuzz.orchestrate.workflows.base import ROUND_SIZE, ROUND_SIZE_MAX
from fuzz.orchestrate.workflows.scheduling import _next_round_size


def test_rounds_grow_while_all_is_placed_and_shrink_once_a_task_waits() -> None:
    size = ROUND_SIZE
    sizes = []
    for _ in range(5):
        size = _next_round_size(size, full=True, waited=False)
        sizes.append(size)
    assert sizes == [128, 256, ROUND_SIZE_MAX, ROUND_SIZE_MAX, ROUND_SIZE_MAX]
    assert _next_round_size(ROUND_SIZE_MAX, full=False, waited=False) == ROUND_SIZE_MAX
    assert _next_round_size(ROUND_SIZE_MAX, full=True, waited=True) == ROUND_SIZE
    assert _next_round_size(128, full=False, waited=True) == ROUND_SIZE
