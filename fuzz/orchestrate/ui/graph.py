"""A workflow's job graph drawn as SVG on the server (no drawing library in the page).

Jobs and services are placed in columns by their depth in the graph (a job one column
right of the deepest job it waits for), in the Fuzzfile's order within a column; an
arrow goes from each dependency to its dependant. Each box says the job's state in
words (and colour), so the drawing reads without colour too.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence

from fuzz.spec.fuzzfile import Fuzzfile

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 170, 46, 60, 18, 8
COLOURS = {"SUCCEEDED": "#d7f0d9", "RUNNING": "#d9e8fb", "FAILED": "#f8d7d7",
           "CANCELED": "#eeeeee", "STARTING": "#fdf1cf", "QUEUED": "#fdf1cf"}


def job_edges(fuzzfile: Fuzzfile) -> dict[str, tuple[str, ...]]:
    """Each job's and service's dependencies, in the Fuzzfile's order."""
    return {name: tuple(other for other, _ in item.dependencies())
            for name, item in fuzzfile.runnables().items()}


def job_states(tasks: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Each job's state and how its box says it, from its tasks' (job, state) pairs:
    the tasks' one state (``SUCCEEDED``, ``SUCCEEDED (3 tasks)`` for a task array), or
    ``MIXED`` and the count of each."""
    counts: dict[str, Counter[str]] = {}
    for job, state in tasks:
        counts.setdefault(job, Counter())[state] += 1
    states = {}
    for job, count in counts.items():
        if len(count) == 1:
            state, n = next(iter(count.items()))
            states[job] = (state, state if n == 1 else f"{state} ({n} tasks)")
        else:
            states[job] = ("MIXED", ", ".join(f"{state} {n}" for state, n in
                                              sorted(count.items())))
    return states


def _depths(edges: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str]) -> int:
        if name not in depth:
            parents = [p for p in edges.get(name, ()) if p in edges and p not in seen]
            depth[name] = 1 + max((of(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for name in edges:
        of(name, frozenset())
    return depth


def _colour(state: str) -> str:
    return COLOURS.get(state, "#ffffff")


def draw(edges: Mapping[str, tuple[str, ...]], states: Mapping[str, tuple[str, str]]) -> str:
    """The graph as an SVG element (to put in the page as it is)."""
    depth = _depths(edges)
    columns: dict[int, list[str]] = {}
    for name in edges:
        columns.setdefault(depth[name], []).append(name)
    where = {name: (MARGIN + column * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y))
             for column, names in columns.items() for row, name in enumerate(names)}
    width = MARGIN * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = MARGIN * 2 + max((len(n) for n in columns.values()), default=1) * \
        (BOX_H + GAP_Y) - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" '
             f'aria-labelledby="dag-title" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title id="dag-title">The job graph</title>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
             '<path d="M 0 0 L 10 5 L 0 10 z" fill="#444"/></marker></defs>']
    for name, parents in edges.items():
        x, y = where[name]
        for parent in parents:
            if parent in where:
                px, py = where[parent]
                parts.append(f'<line x1="{px + BOX_W}" y1="{py + BOX_H // 2}" x2="{x}" '
                             f'y2="{y + BOX_H // 2}" stroke="#444" marker-end="url(#arrow)"/>')
    for name in edges:
        x, y = where[name]
        state, label = states.get(name, ("WAITING", "WAITING"))
        parts.append(
            f'<g class="dag-job" data-job="{html.escape(name)}" data-state="'
            f'{html.escape(state)}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="6" fill="{_colour(state)}" stroke="#333"/>'
            f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{html.escape(name)}</text>'
            f'<text x="{x + 8}" y="{y + 36}" font-size="12">{html.escape(label)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
