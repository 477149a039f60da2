"""Benchmark: workflow throughput on a 3-node local cluster versus bare ``runc run``.

500 one-core tasks running ``/bin/true`` (one task array) go through the whole
orchestrator: ``fuzz workflow start``, scheduling, a lease, a container start and
wait on an agent, log collection, clean-up. The baseline, in the same run, is 500
bare ``runc run`` of an equivalent prepared bundle at the same parallelism (the
cluster's total cores: one task per core). Prints jobs per second for both and
their ratio.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuzz.substrate.runtime.bundle import NOFILE_LIMIT, ContainerSpec, oci_config
from fuzz.testing.cluster import local_cluster
from fuzz.testing.oci import (
    BUSYBOX_REPO,
    build_busybox_layout,
    free_port,
    push_layout,
    run_checked,
    serve_registry,
)

TASKS = 500
NODES = 3
MEMORY = 32 * 2**20
FUZZFILE = """\
version: v1
jobs:
  noop:
    image: {{uri: {image}}}
    command: [/bin/true]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    task-array: {{start: 1, end: {tasks}}}
"""


def time_workflow(directory: Path, image: str, tasks: int) -> tuple[float, int]:
    """Seconds from `fuzz workflow start` to the workflow's end, and the cluster's cores."""
    with local_cluster(directory, [image.split("/")[2]], free_port(), nodes=NODES,
                       cluster="bench") as cluster, cluster.client() as client:
        cores = sum(node.cores for node in client.list_nodes())
        fuzzfile = directory / "throughput.yaml"
        fuzzfile.write_text(FUZZFILE.format(image=image, tasks=tasks))
        warm = directory / "warm.yaml"  # pull the image on every node first
        warm.write_text(FUZZFILE.format(image=image, tasks=cores))
        client.start_workflow("warm", warm.read_text(), str(warm))
        _finish(client.watch_workflow("warm"))
        started = time.perf_counter()
        client.start_workflow("throughput", fuzzfile.read_text(), str(fuzzfile))
        _finish(client.watch_workflow("throughput"))
        return time.perf_counter() - started, cores


def _finish(updates: Iterator[Any]) -> None:
    last = None
    for update in updates:
        last = update
    if last is None or last.state != "SUCCEEDED":
        raise SystemExit(f"the workflow did not succeed: {last}")


def time_bare_runc(rootfs: Path, workdir: Path, tasks: int, parallel: int) -> float:
    """Seconds for ``tasks`` bare ``runc run``, ``parallel`` at once.

    Each of the ``parallel`` slots has its own prepared bundle (and so its own
    cgroup), as each agent job has its own.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    slots: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for slot in range(parallel):
        bundle = workdir / f"bundle-{slot}"
        bundle.mkdir()
        spec = ContainerSpec(id=f"bare-{slot}", rootfs=rootfs, args=("/bin/true",),
                             memory_bytes=MEMORY)
        config = oci_config(spec, rootfs, nofile=nofile)  # as the agent's manager does
        config["root"]["readonly"] = True
        (bundle / "config.json").write_text(json.dumps(config))
        slots.put(bundle)

    def one(index: int) -> None:
        bundle = slots.get()
        try:
            done = subprocess.run(["runc", "run", "--bundle", str(bundle), f"bare-tp-{index}"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        finally:
            slots.put(bundle)
        if done.returncode != 0:
            raise SystemExit(f"runc run failed: {done.stderr.decode()[-500:]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(tasks)))
    return time.perf_counter() - started


def main() -> int:
    """Run both and print the BENCH line."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-tp-"))
    os.chmod(workdir, 0o755)
    try:
        (workdir / "registry").mkdir()
        (workdir / "cluster").mkdir()
        with serve_registry(workdir / "registry") as registry:
            layout = build_busybox_layout(workdir / "image")
            image = push_layout(layout, registry, BUSYBOX_REPO)
            fuzz_seconds, cores = time_workflow(workdir / "cluster", image.reference, TASKS)
        bundle_dir = workdir / "unpacked"
        run_checked(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle_dir)])
        bare_seconds = time_bare_runc(bundle_dir / "rootfs", workdir, TASKS, cores)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fuzz_rate, bare_rate = TASKS / fuzz_seconds, TASKS / bare_seconds
    print(f"bare runc run, {cores} at once:  {TASKS} in {bare_seconds:.1f}s = "
          f"{bare_rate:.1f} jobs/s")
    print(f"fuzz workflow on {NODES} nodes ({cores} cores): {TASKS} in {fuzz_seconds:.1f}s = "
          f"{fuzz_rate:.1f} jobs/s")
    print(f"BENCH throughput_ratio_vs_runc={fuzz_rate / bare_rate:.2f} x target>=0.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
