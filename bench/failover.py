"""Benchmark: failover of the orchestrator's replicas under a running workflow.

A local cluster of two agents (real runc containers) whose orchestrator runs as two
replicas (``orchestrator.replicas``) on a throwaway PostgreSQL, with the default
leadership lease (5 s, unless ``$FUZZ_LEADER_LEASE_TTL`` says otherwise). A workflow
of ``TASKS`` one-second jobs runs; once ``STARTED_BEFORE`` of them have started, the
leader is killed with kill -9.

- ``failover_seconds``: from the kill to the first job started after the standby
  leads (each job marks its start in a file of its own, so a job started by the
  old leader's last moments is not counted: the count is taken once the standby
  says SERVING). The median of ``RUNS`` runs.

Baseline, same run: the lease's TTL, what the figure is mostly made of (a standby waits
for the lease to lapse by the database's clock: between 3/4 of the TTL and the TTL after
the kill, renewals being every TTL/4); the figure is printed over it too.

``measure_failover_seconds`` is what ``bench/control_plane.py`` calls. Needs root and
Debian's runc, skopeo, umoci, busybox-static, docker-registry, postgresql.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from fuzz.orchestrate.leadership import lease_ttl
from fuzz.testing.oci import BUSYBOX_REPO, build_busybox_layout, push_layout, serve_registry
from fuzz.testing.postgres import Postgres, running_postgres
from fuzz.testing.replicas import (
    kill_9,
    marking_tasks,
    replicated_cluster,
    started,
    wait_leading,
)

TASKS = 40
STARTED_BEFORE = 8
RUNS = 3
TARGET_S = 15.0
WAIT_S = 300.0


def _wait(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _one_failover(workdir: Path, registry: str, image: str, server: Postgres) -> float:
    """One cluster, one workflow, one kill -9 of the leader: the seconds to the next
    job the new leader started."""
    database = "failover_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.conninfo, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {database} TEMPLATE template0")
    try:
        with replicated_cluster(workdir, [registry], server.url(database)) as running:
            cluster = running.cluster
            spec = cluster.directory / "load.yaml"
            spec.write_text(marking_tasks(image, TASKS, 1))
            cluster.must("workflow", "start", "load", str(spec))
            _wait("the first jobs to start", lambda: started(cluster) >= STARTED_BEFORE)
            killed = kill_9(cluster.data_dir)
            wait_leading(cluster, running.standby)
            before = started(cluster)
            _wait("a job started by the new leader", lambda: started(cluster) > before)
            return time.monotonic() - killed
    finally:
        with psycopg.connect(server.conninfo, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def measure_failover_seconds(server: Postgres | None = None, runs: int = RUNS) -> float:
    """The median seconds from kill -9 of the leading replica to the next job started
    by the new leader (see the module), on ``server`` (else a throwaway PostgreSQL)."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    if server is None:
        with running_postgres() as fresh:
            return measure_failover_seconds(fresh, runs)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-failover-"))
    os.chmod(workdir, 0o755)
    try:
        (workdir / "registry").mkdir()
        with serve_registry(workdir / "registry") as registry:
            image = push_layout(build_busybox_layout(workdir / "image"), registry,
                                BUSYBOX_REPO).reference
            times = []
            for run in range(runs):
                (workdir / f"cluster{run}").mkdir()
                times.append(_one_failover(workdir / f"cluster{run}", registry.host, image,
                                           server))
                print(f"run {run + 1}: failover {times[-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return statistics.median(times)


def main() -> int:
    """Measure and print the figure, its ratio to the lease TTL, and the BENCH line."""
    seconds = measure_failover_seconds()
    ttl = lease_ttl()  # the servers' ($FUZZ_LEADER_LEASE_TTL, else the default)
    print(f"failover (median of {RUNS}): {seconds:.2f} s; the lease's TTL: {ttl:g} s "
          f"({seconds / ttl:.2f} x the TTL)")
    print(f"BENCH failover_seconds={seconds:.2f} s target<{TARGET_S:g}")
    return 0 if seconds < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
