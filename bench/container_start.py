"""Benchmark: container start + wait through ContainerManager versus a bare ``runc run``.

Prepares a busybox root filesystem from ``/bin/busybox`` in a temporary dir, then
runs N ``/bin/true`` containers one after another both ways, in the same run:

* manager: :meth:`ContainerManager.start` + :meth:`ContainerManager.wait` (the
  agent's path, minus gRPC), on a fresh state dir, the monitor started beforehand
  (it is long-lived by design);
* bare: ``runc run`` (foreground: create, start, wait, delete) of a prepared
  bundle with the same OCI config (cpuset, memory limit, mounts), the image
  directory itself as its root.

The two alternate in rounds of ``N / ROUNDS`` so that drift in a shared machine's
load hits both alike; each manager round runs back to back, as a node's jobs
would, and its containers are removed (untimed) after the round. Prints the
medians and ends with ``BENCH manager_start_ratio_vs_runc=<median ratio>``.
Run as root: ``python bench/container_start.py [N]``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.substrate.runtime.bundle import NOFILE_LIMIT, ContainerSpec, oci_config
from fuzz.substrate.runtime.containers import ContainerManager

N = 100
ROUNDS = 4
WARMUP = 3
TARGET = 1.3
MIB = 1024 * 1024


def make_image(base: Path) -> Path:
    """A busybox root filesystem, the way an unpacked image looks."""
    rootfs = base / "image" / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "true"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / directory).mkdir()
    return rootfs


def job(container_id: str, rootfs: Path) -> ContainerSpec:
    """The benchmark's job: ``/bin/true`` on one core with a memory limit."""
    return ContainerSpec(
        id=container_id, rootfs=rootfs, args=("/bin/true",), cpus=(0,), memory_bytes=64 * MIB
    )


def bare_bundle(base: Path, rootfs: Path) -> Path:
    """A prepared bundle with the same config, rooted directly at the image."""
    bundle = base / "bare"
    bundle.mkdir()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    config = oci_config(job("bare", rootfs), rootfs, nofile=nofile)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def run_bare(runc: str, bundle: Path, container_id: str) -> float:
    """Seconds for one foreground ``runc run`` of ``bundle``."""
    started = time.perf_counter()
    subprocess.run(
        [runc, "run", "--bundle", str(bundle), container_id],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def run_managed(manager: ContainerManager, spec: ContainerSpec) -> float:
    """Seconds for start + wait of ``spec`` through the manager."""
    started = time.perf_counter()
    manager.start(spec)
    status = manager.wait(spec.id, timeout=60)
    elapsed = time.perf_counter() - started
    if status.exit_code != 0:
        raise SystemExit(f"{spec.id} ended {status}")
    return elapsed


def describe(name: str, times: list[float]) -> str:
    """One line of statistics in milliseconds."""
    ordered = sorted(times)
    p10, p90 = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    return (
        f"{name:8s} n={len(times)} median {statistics.median(times) * 1000:6.2f} ms"
        f"  mean {statistics.fmean(times) * 1000:6.2f}  p10 {p10 * 1000:6.2f}"
        f"  p90 {p90 * 1000:6.2f}"
    )


def main(count: int = N) -> int:
    """Run the benchmark; print the medians and the BENCH line."""
    runc = shutil.which("runc")
    if runc is None or os.geteuid() != 0 or not Path("/bin/busybox").is_file():
        raise SystemExit("needs root, runc and /bin/busybox (busybox-static)")
    tag = os.urandom(3).hex()
    base = Path(tempfile.mkdtemp(prefix="bench-containers-"))
    manager = ContainerManager(base / "state")
    try:
        rootfs = make_image(base)
        bundle = bare_bundle(base, rootfs)
        for index in range(WARMUP):  # also starts the monitor
            run_bare(runc, bundle, f"bench-{tag}-bare-warm{index}")
            run_managed(manager, job(f"bench-{tag}-warm{index}", rootfs))
        bare: list[float] = []
        managed: list[float] = []
        per_round = max(count // ROUNDS, 1)
        done = 0
        while done < count:
            size = min(per_round, count - done)
            for index in range(done, done + size):
                bare.append(run_bare(runc, bundle, f"bench-{tag}-bare{index}"))
            ids = [f"bench-{tag}-{index}" for index in range(done, done + size)]
            for container_id in ids:
                managed.append(run_managed(manager, job(container_id, rootfs)))
            for container in manager.list():
                manager.remove(container.id)
            done += size
        ratio = statistics.median(managed) / statistics.median(bare)
        print(describe("bare", bare))
        print(describe("manager", managed))
        print(f"BENCH manager_start_ratio_vs_runc={ratio:.3f} x target<={TARGET}")
        return 0
    finally:
        manager.shutdown_monitor()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else N))
