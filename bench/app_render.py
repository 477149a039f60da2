"""Benchmark: rendering application templates, as ``fuzz app render`` and ``fuzz app start``
do, for 50 templates.

The 50 applications are those of ``catalog/`` (the MPI hello world, the parameter sweep,
the data pipeline) each given different values, taking turns; each is rendered the
whole way (:func:`fuzz.catalog.application.render_application`: values checked and typed,
the template through the Go renderer, a subprocess, and the rendered Fuzzfile checked).
The baseline, measured in the same run, is the renderer's floor: the same subprocess
rendering an empty template with no values (start-up and the JSON round trip), so
the ratio says what the templates and the checks add.

On a busy shared machine the wall clock includes waits for a core: the figures were
taken under whatever load the machine had.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from fuzz.catalog.application import Application, render_application
from fuzz.catalog.catalogs import load_catalog
from fuzz.catalog.render import render_template

TEMPLATES = 50
TARGET_MS = 50.0
CATALOG = Path(__file__).resolve().parents[1] / "catalog"

OVERRIDES = {
    "mpi_hello_world": lambda i: [f"Nodes={1 + i % 8}", f"ProcsPerNode={1 + i % 3}",
                                  f"Implementation={('openmpi', 'mpich')[i % 2]}"],
    "parameter_sweep": lambda i: [f"Last={5 + i}", f"Concurrency={1 + i % 6}",
                                  f"Scale={i}"],
    "data_pipeline": lambda i: [f"Input=s3://bucket/run-{i}/in.tar.gz",
                                f"Output=s3://bucket/run-{i}/", "Secret=secret://user/s3"],
}


def workload() -> list[tuple[Application, list[str]]]:
    """The 50 renders: the catalog's applications in turn, each with values of its own."""
    apps = load_catalog("fuzz", CATALOG).applications
    renders = []
    for index in range(TEMPLATES):
        app = apps[index % len(apps)]
        renders.append((app, OVERRIDES[app.key](index)))
    return renders


def _timed(step: Callable[[], object], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    """Print the per-template times, the ratio to the floor, and the BENCH line."""
    renders = workload()
    render_application(*renders[0])  # warm the page cache for the renderer's binary
    floor = _timed(lambda: render_template("", {}, "empty"), TEMPLATES)
    times = []
    for app, overrides in renders:
        start = time.perf_counter()
        render_application(app, overrides)
        times.append((time.perf_counter() - start) * 1000)
    per_template = statistics.mean(times)
    baseline = statistics.mean(floor)
    print(f"{TEMPLATES} templates: mean {per_template:.1f} ms, p95 "
          f"{sorted(times)[int(0.95 * len(times)) - 1]:.1f} ms; the renderer's floor "
          f"(empty template) {baseline:.1f} ms: ratio {per_template / baseline:.2f}")
    print(f"BENCH render_ms_per_template={per_template:.1f} ms target<{TARGET_MS:g}")


if __name__ == "__main__":
    main()
