"""Helpers for end-to-end workflow tests on the local cluster of :mod:`fuzz.testing.cluster`."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fuzz.testing import cluster
from tests.cliutil import Result, kill_agents, run_fuzz


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
                  limits: Mapping[str, Any] | None = None) -> Iterator[LocalCluster]:
    """``nodes`` local nodes and their orchestrator in ``directory``; every agent gone after.

    ``limits``: the orchestrator's ``limits:`` block (none: the defaults).
    """
    try:
        with cluster.local_cluster(directory, registries, port, nodes=nodes, cluster="e2e",
                                   host_paths=host_paths, local=local,
                                   limits=limits) as running:
            yield LocalCluster(running.directory, running.nodes)
    finally:
        kill_agents(directory)


def dump(status: dict[str, Any]) -> str:
    """A status, for assertion messages."""
    return json.dumps(status, indent=1)
