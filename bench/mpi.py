"""Benchmark: MPI jobs launched by fuzz (no SSH) against the same binaries under host mpirun.

On one local cluster of 32 agents (all on this machine), with Debian's Open MPI
image of the tests (``fuzz.testing.mpi_images``, programs from tests/support/mpi/):

- ``mpi_allreduce_ratio_vs_host``: the time ``allreduce`` reports for 1,000
  MPI_Allreduce of 8 bytes, 2 ranks on 2 nodes inside fuzz (one container per node;
  the nodes are one machine, so mpirun runs both ranks as ranks of one node, each in
  its own node's container, and they talk through vader: fuzz.orchestrate.workflows.mpi),
  over the same binary (from the image's root filesystem) under the host's
  ``mpirun -np 2`` (vader), same run, fuzz's runs and the host's in turns. For context
  it also prints the same program built against Debian's MPICH (ch4:ucx) in fuzz, whose
  ranks on two local nodes talk through SysV shared memory (fuzz.substrate.launch.sharedns),
  over the same binary under the host's ``mpiexec.mpich -n 2``:
  ``mpi_allreduce_mpich_ratio_vs_host``.
- ``mpi_launch_ratio_vs_host``: from ``fuzz workflow start`` to the MPI program's end
  for an 8-node hello world (``ranks``, one rank per node) over the same for host
  ``mpirun -np 8`` of the same binary. The program's end is when its last rank
  ended: each rank runs ``sh -c 'ranks && date +%s.%N'`` (fuzz and host alike), and
  the latest wall-clock time printed is taken (the containers share the host's
  clock). Host and fuzz runs take turns while the cluster is up, so both meet the
  same load (a shared machine's load changes from minute to minute, and 32 idle
  agents are part of it); the host's runs before the cluster came up are printed
  beside them, with the ratio to those. The time to the workflow's end (the
  containers removed, the leases freed) and the host ``mpirun``'s own wall time are
  printed for context.
- ``mpi_32_nodes_seconds``: the same for a 32-node hello world on the 32 agents.

The 32 agents share this machine's cores, so the ranks are many more than the real
cores: fuzz's jobs of more than 2 ranks set ``OMPI_MCA_mpi_yield_when_idle=1`` (an
idle rank yields its core, which the host's ``mpirun --oversubscribe`` does by itself),
as a user would on oversubscribed nodes. The image is pulled on every node first (an untimed
32-node run of ``/bin/true``). Each figure is
the median of ``RUNS`` runs (``LAUNCH_RUNS`` of the launch figure, ``RUNS_32`` of the
32-node one). ``--allreduce-only``: the allreduce figure alone, on 2 agents. Needs root, Debian's
openmpi-bin on the host, runc, skopeo, umoci, mmdebstrap (the image is built once
and cached), docker-registry.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.testing.cluster import local_cluster
from fuzz.testing.debian_images import unpack_rootfs
from fuzz.testing.mpi_images import mpi_layout
from fuzz.testing.oci import free_port, push_layout, serve_registry

SOURCES = Path(__file__).resolve().parent.parent / "tests" / "support" / "mpi"
AGENTS = 32
RUNS = 3
LAUNCH_RUNS = 5  # the launch figure's runs (each a few seconds): its median varies most
RUNS_32 = 2
ITERATIONS = 1000
SECONDS = re.compile(r"allreduce iterations=\d+ bytes=\d+ seconds=([0-9.]+)")
ENDED = re.compile(r"^ended=([0-9]+\.[0-9]+)$", re.MULTILINE)
HELLO = "ranks && echo ended=$(date +%s.%N)"  # each rank: the program, then its end time
FUZZFILE = """\
version: v1
jobs:
  mpi:
    image: {{uri: {image}}}
    command: [{command}]
    env: [{env}]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 128MiB}}}}
    multinode: {{nodes: {nodes}, implementation: {implementation}}}
    policy: {{timeout: {{execute: 10m}}}}
"""


def run_workflow(client: OrchestratorClient, directory: Path, name: str, image: str,
                 nodes: int, command: str, implementation: str = "openmpi"
                 ) -> tuple[float, float, str]:
    """Seconds from the workflow's start to its end, the wall-clock time of its start,
    and its job's log. Jobs of more ranks than the 2 of the allreduce (which the host's
    cores hold, so that its ranks spin as the host's do) get
    ``OMPI_MCA_mpi_yield_when_idle=1``, as the host's oversubscribed ``mpirun``."""
    path = directory / f"{name}.yaml"
    env = "OMPI_MCA_mpi_yield_when_idle=1" if nodes > 2 else ""
    path.write_text(FUZZFILE.format(image=image, nodes=nodes, command=command,
                                    implementation=implementation, env=env))
    started_at = time.time()
    started = time.perf_counter()
    client.start_workflow(name, path.read_text(), str(path))
    last = None
    for update in client.watch_workflow(name):
        last = update
    seconds = time.perf_counter() - started
    if last is None or last.state != "SUCCEEDED":
        raise SystemExit(f"workflow {name} did not succeed: {last}")
    log = b"".join(client.stream_log(name, "mpi")).decode()
    return seconds, started_at, log


def host_mpirun(program: list[str], ranks: int,
                env: dict[str, str] | None = None, mpich: bool = False
                ) -> tuple[float, float, str]:
    """Wall seconds, the wall-clock time of the start, and the output of the host's
    ``mpirun -np RANKS PROGRAM...`` (with ``mpich``: MPICH's ``mpiexec.mpich -n RANKS``)."""
    argv = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks)]
    if mpich:
        argv = ["mpiexec.mpich", "-n", str(ranks)]
    started_at = time.time()
    started = time.perf_counter()
    done = subprocess.run([*argv, *program], capture_output=True, text=True, timeout=600,
                          check=False, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"host mpirun failed: {done.stderr[-2000:]}")
    return seconds, started_at, done.stdout


def program_end(log: str, ranks: int) -> float:
    """The wall-clock time the last of ``ranks`` ranks ended, as they printed it."""
    ends = [float(stamp) for stamp in ENDED.findall(log)]
    if len(ends) != ranks:
        raise SystemExit(f"{len(ends)} end times for {ranks} ranks in:\n{log}")
    return max(ends)


def host_launch_seconds(run: tuple[float, float, str]) -> float:
    """From the start of a host ``mpirun`` (:func:`host_mpirun`'s answer) to its program's
    end, as its 8 ranks printed it."""
    _, started, log = run
    return program_end(log, 8) - started


def reported(log: str) -> float:
    """The seconds ``allreduce`` printed."""
    match = SECONDS.search(log)
    if match is None:
        raise SystemExit(f"no timing line in:\n{log}")
    return float(match.group(1))


def main() -> int:
    """Run everything (or, with ``--allreduce-only``, the allreduce figure) and print the
    BENCH lines."""
    allreduce_only = sys.argv[1:] == ["--allreduce-only"]
    if sys.argv[1:] and not allreduce_only:
        raise SystemExit("usage: python -m bench.mpi [--allreduce-only]")
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    if shutil.which("mpirun") is None:
        raise SystemExit("the host needs Debian's openmpi-bin (make setup installs it)")
    if shutil.which("mpiexec.mpich") is None:
        raise SystemExit("the host needs Debian's mpich (make setup installs it)")
    agents = 2 if allreduce_only else AGENTS
    print("load average (1, 5, 15 min) at the start: "
          + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
    layout = mpi_layout("openmpi", SOURCES)
    mpich = mpi_layout("mpich", SOURCES)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-mpi-"))
    os.chmod(workdir, 0o755)
    try:
        rootfs = unpack_rootfs(layout.path, workdir / "rootfs")
        binaries = rootfs / "usr" / "local" / "bin"
        reduce = [str(binaries / "allreduce"), str(ITERATIONS)]
        mpich_binaries = unpack_rootfs(mpich.path, workdir / "mpich") / "usr" / "local" / "bin"
        reduce_mpich = [str(mpich_binaries / "allreduce"), str(ITERATIONS)]
        path = {**os.environ, "PATH": f"{binaries}:{os.environ.get('PATH', '')}"}
        host_alone = [] if allreduce_only else [
            host_launch_seconds(host_mpirun(["sh", "-c", HELLO], 8, env=path))
            for _ in range(RUNS)]
        (workdir / "registry").mkdir()
        (workdir / "cluster").mkdir()
        with serve_registry(workdir / "registry") as registry:
            image = push_layout(layout.path, registry, "fuzz/openmpi").reference
            mpich_image = push_layout(mpich.path, registry, "fuzz/mpich").reference
            cluster_started = time.perf_counter()
            with local_cluster(workdir / "cluster", [registry.host], free_port(),
                               nodes=agents, cluster="bench") as cluster, \
                    cluster.client() as client:
                print(f"{agents} agents up in {time.perf_counter() - cluster_started:.0f}s")
                directory = workdir / "cluster"
                run_workflow(client, directory, "warm", image, agents, "/bin/true")  # pulls
                # fuzz's runs and the host's take turns, so that both meet the same load;
                # the program times itself: the image's pull by the first run is not counted
                fuzz_reduce, host_reduce, fuzz_reduce_mpich, host_reduce_mpich = [], [], [], []
                for run in range(RUNS):
                    fuzz_reduce.append(reported(run_workflow(
                        client, directory, f"reduce-{run}", image, 2,
                        f"allreduce, '{ITERATIONS}'")[2]))
                    host_reduce.append(reported(host_mpirun(reduce, 2)[2]))
                for run in range(RUNS):
                    fuzz_reduce_mpich.append(reported(run_workflow(
                        client, directory, f"reduce-mpich-{run}", mpich_image, 2,
                        f"allreduce, '{ITERATIONS}'", "mpich")[2]))
                    host_reduce_mpich.append(
                        reported(host_mpirun(reduce_mpich, 2, mpich=True)[2]))
                if not allreduce_only:
                    launch = launch_figures(client, directory, image, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    median = statistics.median
    print(f"allreduce x{ITERATIONS}, 2 ranks: fuzz (2 nodes, one host to mpirun: vader) "
          f"{median(fuzz_reduce) * 1e3:.2f} ms,"
          f" host mpirun {median(host_reduce) * 1e3:.2f} ms (shared memory)")
    print(f"  runs: fuzz {', '.join(f'{s * 1e3:.2f}' for s in fuzz_reduce)} ms; host "
          f"{', '.join(f'{s * 1e3:.2f}' for s in host_reduce)} ms (best over best "
          f"{min(fuzz_reduce) / min(host_reduce):.2f})")
    print(f"  MPICH (ch4:ucx) in fuzz, 2 nodes, UCX over SysV shared memory: "
          f"{median(fuzz_reduce_mpich) * 1e3:.2f} ms (runs "
          f"{', '.join(f'{s * 1e3:.2f}' for s in fuzz_reduce_mpich)}), the same binary under "
          f"host mpiexec.mpich -n 2 {median(host_reduce_mpich) * 1e3:.2f} ms (runs "
          f"{', '.join(f'{s * 1e3:.2f}' for s in host_reduce_mpich)}; best over best "
          f"{min(fuzz_reduce_mpich) / min(host_reduce_mpich):.2f}: a rank that loses its core "
          "spins the other for milliseconds on a loaded machine)")
    if not allreduce_only:
        print_launch_figures(launch, host_alone)
    print("load average (1, 5, 15 min) at the end: "
          + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
    print(f"BENCH mpi_allreduce_ratio_vs_host={median(fuzz_reduce) / median(host_reduce):.2f} x "
          "target<=1.2")
    print(f"BENCH mpi_allreduce_mpich_ratio_vs_host="
          f"{median(fuzz_reduce_mpich) / median(host_reduce_mpich):.2f} x target<=1.2")
    if not allreduce_only:
        print(f"BENCH mpi_launch_ratio_vs_host="
              f"{median(launch.fuzz_launch) / median(launch.host_launch):.2f} x target<=2")
        print(f"BENCH mpi_32_nodes_seconds={median(launch.fuzz_32):.1f} s target<60")
    return 0


@dataclass(frozen=True)
class LaunchFigures:
    """What the launch and 32-node figures measured (seconds each)."""

    host_launch: list[float]
    host_wall: list[float]
    fuzz_launch: list[float]
    fuzz_whole: list[float]
    fuzz_32: list[float]


def launch_figures(client: OrchestratorClient, directory: Path, image: str,
                   path: dict[str, str]) -> LaunchFigures:
    """The 8-node hello world, fuzz and host in turns, then the 32-node one."""
    host_runs, fuzz_runs = [], []
    for run in range(LAUNCH_RUNS):  # in turns: the same load for both
        host_runs.append(host_mpirun(["sh", "-c", HELLO], 8, env=path))
        fuzz_runs.append(run_workflow(client, directory, f"hello8-{run}", image, 8,
                                      f"sh, -c, '{HELLO}'"))
    return LaunchFigures(
        host_launch=[host_launch_seconds(run) for run in host_runs],
        host_wall=[seconds for seconds, _, _ in host_runs],
        fuzz_launch=[program_end(log, 8) - started for _, started, log in fuzz_runs],
        fuzz_whole=[seconds for seconds, _, _ in fuzz_runs],
        fuzz_32=[run_workflow(client, directory, f"hello32-{run}", image, AGENTS,
                              "ranks")[0] for run in range(RUNS_32)])


def print_launch_figures(launch: LaunchFigures, host_alone: list[float]) -> None:
    """The launch figures' lines for context (the BENCH lines come last)."""
    median = statistics.median
    print(f"hello world, 8 ranks, start to the program's end: fuzz (8 nodes) "
          f"{median(launch.fuzz_launch):.2f}s, host mpirun -np 8 "
          f"{median(launch.host_launch):.2f}s "
          f"(runs: fuzz {', '.join(f'{s:.2f}' for s in launch.fuzz_launch)}; "
          f"host {', '.join(f'{s:.2f}' for s in launch.host_launch)})")
    print(f"  host mpirun -np 8 before the cluster was up: {median(host_alone):.2f}s "
          f"(fuzz over it: {median(launch.fuzz_launch) / median(host_alone):.2f})")
    print(f"  for context: fuzz to the workflow's end {median(launch.fuzz_whole):.2f}s, "
          f"host mpirun's wall time {median(launch.host_wall):.2f}s")
    print(f"hello world, {AGENTS} nodes: {', '.join(f'{s:.1f}s' for s in launch.fuzz_32)}")


if __name__ == "__main__":
    sys.exit(main())
