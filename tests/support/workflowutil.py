"""Helpers for end-to-end workflow tests on the local cluster of :mod:`fuzz.testing.cluster`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fuzz.testing import cluster
from tests.support.cliutil import Result, kill_agents, run_fuzz


class LocalCluster(cluster.LocalCluster):
    """The cluster of :mod:`fuzz.testing.cluster` with what tests ask of it."""

    def fuzz(self, *args: str, timeout: float = 120, stdin: str = "") -> Result:
        """Run ``fuzz ARGS`` next to the cluster spec."""
        return run_fuzz(self.directory, *args, timeout=timeout, stdin=stdin)

    def ok(self, *args: str, timeout: float = 120) -> Result:
        """Run ``fuzz ARGS`` and require exit 0."""
        result = self.fuzz(*args, timeout=timeout)
        assert result.code == 0, f"fuzz {' '.join(args)}: {result.err}{result.out}"
        return result

    def start(self, name: str, fuzzfile: str) -> Path:
        """Write ``fuzzfile`` and start it as workflow ``name``; returns the file's path."""
        path = self.directory / f"{name}.yaml"
        path.write_text(fuzzfile)
        self.ok("workflow", "start", name, str(path))
        return path

    def server_pid(self) -> int:
        """The pid of the running orchestrator."""
        return int(json.loads((self.data_dir / "server.json").read_text())["pid"])

    def status(self, name: str) -> dict[str, Any]:
        """``fuzz workflow status NAME --json``."""
        data: dict[str, Any] = self.ok("workflow", "status", name, "--json").json()
        return data

    def wait(self, name: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the workflow has ended; returns its final status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if status["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                return status
            assert time.monotonic() < deadline, f"workflow {name} still {status['state']}"
            time.sleep(0.3)

    def wait_for(self, name: str, task: str, state: str, timeout: float = 60) -> dict[str, Any]:
        """Poll until ``task`` of ``name`` is in ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            found = tasks_by_key(self.status(name))[task]
            if found["state"] == state:
                return found
            assert time.monotonic() < deadline, f"{task} still {found['state']}"
            time.sleep(0.2)


def tasks_by_key(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A status's tasks by key."""
    return {task["key"]: task for task in status["tasks"]}


@contextlib.contextmanager
def local_cluster(directory: Path, registries: list[str], port: int,
                  nodes: int = 2, host_paths: Sequence[str] = (),
                  local: Mapping[str, Any] | None = None,
                  orchestrator: Mapping[str, Any] | None = None) -> Iterator[LocalCluster]:
    """``nodes`` local nodes and their orchestrator in ``directory``; every agent gone after."""
    try:
        with cluster.local_cluster(directory, registries, port, nodes=nodes, cluster="e2e",
                                   host_paths=host_paths, local=local,
                                   orchestrator=orchestrator) as running:
            yield LocalCluster(running.directory, running.nodes)
    finally:
        kill_agents(directory)


def dump(status: dict[str, Any]) -> str:
    """A status, for assertion messages."""
    return json.dumps(status, indent=1)


SAFE_HOST_ROOTS = Path("/var/lib/fuzz-tests")


# The first id of orchestrator.job_ids' default range: the job uid:gid of a test
# cluster's first owner (the admin, in every test that starts workflows with the spec).
FIRST_OWNER_ID = 200000


@contextlib.contextmanager
def safe_host_root() -> Iterator[Path]:
    """A fresh directory fit for ``orchestrator.host_paths``: owned by root, mode 0755, and
    no parent writable by group or others (so not under /tmp); removed afterwards."""
    SAFE_HOST_ROOTS.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=SAFE_HOST_ROOTS))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def planted_roots(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Host paths a server must refuse, each with the reason it must give: a symlink
    to / planted in /tmp, a world-writable directory, a symlink, a directory of
    another user, one writable by its group, a missing one, a relative path."""
    link = Path(f"/tmp/fuzz-x-{os.getpid()}")
    link.symlink_to("/")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with safe_host_root() as safe:
        (safe / "users").mkdir()
        os.chown(safe / "users", 1000, 1000)
        (safe / "grouped").mkdir()
        os.chmod(safe / "grouped", 0o775)
        (safe / "real").mkdir()
        (safe / "link").symlink_to(safe / "real")
        try:
            yield {
                str(link): "/tmp is writable by group and others (mode 1777)",
                str(shared): "/tmp is writable by group and others (mode 1777)",
                f"{safe}/link": f"{safe}/link is a symlink",
                f"{safe}/users": f"{safe}/users is owned by uid 1000, not root",
                f"{safe}/grouped": f"{safe}/grouped is writable by group (mode 775)",
                f"{safe}/missing": f"{safe}/missing does not exist (fuzz init makes the "
                                   "spec's host paths)",
                "relative/path": "not an absolute path",
            }
        finally:
            link.unlink()
