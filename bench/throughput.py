"""Benchmark: workflow throughput on a 3-node local cluster versus bare ``runc run`` and Slurm.

500 one-core tasks running ``/bin/true`` (one task array) go through the whole
orchestrator: ``fuzz workflow start``, scheduling, a lease, a start and wait on an
agent, log collection, clean-up: first as the default runs them (each node's tasks as
processes of one task sandbox, ``fuzz/substrate/monitor/sandbox.py``), then with the
opt-out annotation ``fuzz.io/task-sandbox: "false"`` (a container per task), in the
same cluster; the BENCH ratios are the default's. In the same run, the peers run as many
jobs at the same parallelism (the cluster's total cores: one job per core):

- bare ``runc run`` of an equivalent prepared bundle;
- Slurm (``bench/peers/slurm.py``: slurmctld + slurmd + munge, one node given exactly
  as many CPUs as fuzz's cluster has cores), each of its ways to run many jobs: job
  steps in one allocation, the same steps in runc containers (``--container``, on
  the same image and config), one ``sbatch --array``, one ``srun`` per job.

Prints each one's jobs per second and fuzz's ratios to bare runc and to Slurm's job
steps, and the CPU time per job of bare runc and of each kind of fuzz's processes
(``bench/proc_cpu.py``: the orchestrator, the agents, the monitors and the children
they reaped: runc, runc init and the jobs). ``--tasks`` runs a smaller size for a
quick look.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry; installs
Slurm and munge on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from peers.slurm import ModeResult, SlurmRefused, container_bundle, slurm
from proc_cpu import by_kind, machine_busy_seconds, sample

from fuzz.substrate.monitor.sandbox import IDLE_SECONDS
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
    annotations: {{fuzz.io/task-sandbox: "{sandbox}"}}
"""
MODES = (("true", "task sandboxes"), ("false", "a container per task"))
SETTLE = IDLE_SECONDS + 2.0  # for the idle sandboxes to end: their tasks' CPU is reaped then


def time_workflow(directory: Path, image: str, tasks: int
                  ) -> tuple[int, list[tuple[str, float, Counter[str]]]]:
    """The cluster's cores, and for each of :data:`MODES` (task sandboxes, then the
    opt-out: a container per task), in one cluster: the seconds from `fuzz workflow start`
    to the workflow's end and the CPU seconds each kind of the cluster's processes spent
    meanwhile (with "machine": the whole machine's, whoever spent it), sampled once the
    idle sandboxes have ended (:data:`SETTLE`), when their tasks' CPU has been reaped."""
    results = []
    with local_cluster(directory, [image.split("/")[2]], free_port(), nodes=NODES,
                       cluster="bench") as cluster, cluster.client() as client:
        cores = sum(node.cores for node in client.list_nodes())
        warm = directory / "warm.yaml"  # pull the image on every node first
        warm.write_text(FUZZFILE.format(image=image, tasks=cores, sandbox="true"))
        client.start_workflow("warm", warm.read_text(), str(warm))
        _finish(client.watch_workflow("warm"))
        time.sleep(SETTLE)
        for sandbox, label in MODES:
            name = f"throughput-{sandbox}"
            fuzzfile = directory / f"{name}.yaml"
            fuzzfile.write_text(FUZZFILE.format(image=image, tasks=tasks, sandbox=sandbox))
            before, busy = sample(directory), machine_busy_seconds()
            started = time.perf_counter()
            client.start_workflow(name, fuzzfile.read_text(), str(fuzzfile))
            _finish(client.watch_workflow(name))
            seconds = time.perf_counter() - started
            time.sleep(SETTLE)
            spent = by_kind(before, sample(directory))
            spent["machine"] = machine_busy_seconds() - busy
            results.append((label, seconds, spent))
    return cores, results


def _finish(updates: Iterator[Any]) -> None:
    last = None
    for update in updates:
        last = update
    if last is None or last.state != "SUCCEEDED":
        raise SystemExit(f"the workflow did not succeed: {last}")


def bare_config(rootfs: Path, container_id: str) -> dict[str, Any]:
    """The OCI config the agent's container manager would write for a ``/bin/true`` job."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    spec = ContainerSpec(id=container_id, rootfs=rootfs, args=("/bin/true",),
                         memory_bytes=MEMORY)
    config = oci_config(spec, rootfs, nofile=nofile)
    config["root"]["readonly"] = True  # the shared image rootfs is never written
    return config


def time_bare_runc(rootfs: Path, workdir: Path, tasks: int,
                   parallel: int) -> tuple[float, float]:
    """Seconds for ``tasks`` bare ``runc run``, ``parallel`` at once, and their CPU seconds
    (runc's, runc init's and the jobs').

    Each of the ``parallel`` slots has its own prepared bundle (and so its own
    cgroup), as each agent job has its own.
    """
    slots: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for slot in range(parallel):
        bundle = workdir / f"bundle-{slot}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(bare_config(rootfs, f"bare-{slot}")))
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

    cpu = _children_cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(tasks)))
    return time.perf_counter() - started, _children_cpu_seconds() - cpu


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_slurm(unpacked: Path, tasks: int, slots: int) -> list[ModeResult]:
    """Each of Slurm's ways to run ``tasks`` one-core ``/bin/true``, on ``slots`` CPUs; a
    way that cannot run here is left out with one line saying why."""
    bundle = container_bundle(unpacked, bare_config(unpacked / "rootfs", "slurm"))
    results = []
    with slurm(slots) as peer:
        modes: list[tuple[str, Callable[[], ModeResult]]] = [
            ("steps", partial(peer.steps, tasks)),
            ("--container steps", partial(peer.steps, tasks, container=bundle)),
            ("sbatch --array", partial(peer.array, tasks)),
            ("srun per job", partial(peer.srun_per_job, tasks))]
        for name, mode in modes:
            try:
                results.append(mode())
            except SlurmRefused as refused:
                print(f"Slurm {name}: left out, it cannot run here: {refused}")
    return results


def print_cpu(tasks: int, bare: float, fuzz: Counter[str], label: str) -> None:
    """CPU milliseconds per job: bare runc's, and fuzz's (with ``label``'s way of
    running tasks) by kind of process."""
    print(f"CPU ms per job, fuzz with {label} (the machine's includes whatever else ran"
          " on it meanwhile):")
    print(f"  bare runc run (runc, runc init, the job): {1000 * bare / tasks:6.1f}")
    ours = sum(seconds for kind, seconds in fuzz.items() if kind != "machine")
    rows = [*sorted(fuzz.items(), key=lambda item: -item[1]), ("all of its processes", ours)]
    for kind, seconds in rows:
        print(f"  fuzz {kind + ':':<26} {1000 * seconds / tasks:6.1f}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=TASKS,
                        help=f"jobs per system (default {TASKS})")
    parser.add_argument("--no-slurm", action="store_true",
                        help="leave Slurm out (a quicker look at fuzz against bare runc)")
    return parser.parse_args()


def main() -> int:
    """Run fuzz and its peers and print their figures and the BENCH lines."""
    arguments = _arguments()
    tasks = arguments.tasks
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
            cores, fuzz_runs = time_workflow(workdir / "cluster", image.reference, tasks)
        bundle_dir = workdir / "unpacked"
        run_checked(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle_dir)])
        bare_seconds, bare_cpu = time_bare_runc(bundle_dir / "rootfs", workdir, tasks, cores)
        slurm_results = [] if arguments.no_slurm else time_slurm(bundle_dir, tasks, cores)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fuzz_seconds = fuzz_runs[0][1]  # the default: task sandboxes
    fuzz_rate, bare_rate = tasks / fuzz_seconds, tasks / bare_seconds
    rows = [("bare runc run", bare_seconds),
            *((f"Slurm {result.mode}", result.seconds) for result in slurm_results),
            *((f"fuzz workflow, {NODES} nodes x {cores // NODES} cores, {label}", seconds)
              for label, seconds, _ in fuzz_runs)]
    width = max(len(label) for label, _ in rows) + 1
    print(f"{tasks} one-core /bin/true jobs, {cores} at once (the peers' raw numbers first):")
    for label, seconds in rows:
        print(f"  {label + ':':<{width}} {seconds:6.1f}s = {tasks / seconds:6.1f} jobs/s")
    for label, _, fuzz_cpu in fuzz_runs:
        print_cpu(tasks, bare_cpu, fuzz_cpu, label)
    print(f"BENCH throughput_ratio_vs_runc={fuzz_rate / bare_rate:.2f} x target>=0.8")
    steps = next((result for result in slurm_results
                  if result.mode == "steps in one allocation"), None)
    if arguments.no_slurm:
        return 0
    if steps is None:
        raise SystemExit("no ratio to Slurm's job steps: they did not run (see above)")
    print(f"BENCH throughput_ratio_vs_slurm_steps={fuzz_rate / steps.jobs_per_second:.2f} x "
          f"target>=1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
