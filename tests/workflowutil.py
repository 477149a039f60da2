"""Helpers for end-to-end workflow tests: a local cluster with its orchestrator, files over HTTP.

:class:`LocalCluster` is the real thing a researcher gets from ``make demo``: a
cluster spec with an ``orchestrator:`` block, ``fuzz server --detach``, ``fuzz
apply`` (each node a real agent that joins the server), all driven through the
``fuzz`` CLI in subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cliutil import Result, kill_agents, run_fuzz

CLUSTER_SPEC = """\
version: 1
cluster: {cluster}
state:
  backend: local
  path: .fuzz/state.json
providers:
  local:
    workdir: .fuzz/nodes
    insecure_registries: {registries}
pools:
  cpu:
    provider: local
    min: {nodes}
    max: {nodes}
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
"""


@dataclass
class LocalCluster:
    """A running local cluster and its orchestrator, in ``directory``."""

    directory: Path
    nodes: int

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

    @property
    def data_dir(self) -> Path:
        """The orchestrator's data directory."""
        return self.directory / ".fuzz" / "server"


def tasks_by_key(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A status's tasks by key."""
    return {task["key"]: task for task in status["tasks"]}


def wait_for_nodes(cluster: LocalCluster, timeout: float = 60) -> None:
    """Wait until every node of ``cluster`` has joined its orchestrator."""
    deadline = time.monotonic() + timeout
    from fuzz.orchestrate.connect import orchestrator_client
    from fuzz.spec.loader import load_cluster_spec

    loaded = load_cluster_spec(cluster.directory / "fuzz.yaml")
    with orchestrator_client(loaded) as client:
        while len([n for n in client.list_nodes() if n.state == "READY"]) < cluster.nodes:
            assert time.monotonic() < deadline, "the nodes did not join the orchestrator"
            time.sleep(0.2)


@contextlib.contextmanager
def local_cluster(directory: Path, registries: list[str], port: int, nodes: int = 2,
                  cluster: str = "e2e") -> Iterator[LocalCluster]:
    """Bring a cluster up (server, nodes) in ``directory``; tear everything down after."""
    (directory / "fuzz.yaml").write_text(CLUSTER_SPEC.format(
        cluster=cluster, registries=json.dumps(registries), port=port, nodes=nodes))
    running = LocalCluster(directory, nodes)
    try:
        running.ok("init")
        running.ok("server", "--detach")
        running.ok("apply", "--auto-approve")
        wait_for_nodes(running)
        yield running
    finally:
        running.fuzz("destroy", "--auto-approve")
        running.fuzz("server", "--stop")
        kill_agents(directory)


def dump(status: dict[str, Any]) -> str:
    """A status, for assertion messages."""
    return json.dumps(status, indent=1)
