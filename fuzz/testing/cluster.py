"""A local cluster with its orchestrator, brought up through the real ``fuzz`` CLI.

What ``make demo`` gives a researcher, for tests and benchmarks: a cluster spec
with an ``orchestrator:`` block, ``fuzz server --detach`` and ``fuzz apply`` (each
node a real agent process that joins the server), torn down with ``fuzz destroy``
and ``fuzz server --stop``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.orchestrate.connect import orchestrator_client
from fuzz.spec.loader import load_cluster_spec

JOIN_TIMEOUT = 60.0


def cluster_spec(cluster: str, nodes: int, registries: Sequence[str] = (),
                 orchestrator_port: int | None = None, host_paths: Sequence[str] = (),
                 local: Mapping[str, Any] | None = None,
                 orchestrator: Mapping[str, Any] | None = None) -> str:
    """A cluster spec of one local pool of ``nodes`` nodes (labelled role=compute).

    With ``orchestrator_port`` it has an ``orchestrator:`` block on 127.0.0.1
    whose workflows may use ``host_paths`` on its host; ``registries`` are the
    plain-HTTP registries its agents may pull from; ``local`` adds settings to
    the local provider's block (e.g. a declared ``inventory``), ``orchestrator`` to
    the orchestrator's (e.g. ``ingress``).
    """
    spec = {
        "version": 1,
        "cluster": cluster,
        "state": {"backend": "local", "path": ".fuzz/state.json"},
        "providers": {"local": {"workdir": ".fuzz/nodes",
                                "insecure_registries": list(registries), **(local or {})}},
        "pools": {"cpu": {"provider": "local", "min": nodes, "max": nodes,
                          "labels": {"role": "compute"}}},
    }
    if orchestrator_port is not None:
        spec["orchestrator"] = {"listen": f"127.0.0.1:{orchestrator_port}",
                                "data_dir": ".fuzz/server", "host_paths": list(host_paths),
                                **(orchestrator or {})}
    return yaml.safe_dump(spec, sort_keys=False)


def fuzz_argv(*args: str) -> list[str]:
    """The argv that runs this checkout's fuzz CLI."""
    return [sys.executable, "-m", "fuzz", "--no-color", *args]


@dataclass
class LocalCluster:
    """A cluster of ``nodes`` local nodes and its orchestrator, in ``directory``."""

    directory: Path
    nodes: int

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``fuzz ARGS`` next to the cluster spec (output captured)."""
        return subprocess.run(fuzz_argv(*args), cwd=self.directory, capture_output=True,
                              text=True, timeout=timeout)

    def must(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``fuzz ARGS``; RuntimeError with its output unless it exits 0."""
        done = self.run(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"fuzz {' '.join(args)}: {done.stderr}{done.stdout}")
        return done

    @property
    def data_dir(self) -> Path:
        """The orchestrator's data directory."""
        return self.directory / ".fuzz" / "server"

    @property
    def volume_root(self) -> Path:
        """Where the orchestrator keeps volumes by default: next to its data directory."""
        return self.directory / ".fuzz" / "server-volumes"

    def client(self) -> OrchestratorClient:
        """A client for the cluster's orchestrator."""
        return orchestrator_client(load_cluster_spec(self.directory / "fuzz.yaml"))

    def wait_for_nodes(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Wait until every node has joined the orchestrator."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while len([n for n in client.list_nodes() if n.state == "READY"]) < self.nodes:
                if time.monotonic() > deadline:
                    raise RuntimeError("the nodes did not join the orchestrator")
                time.sleep(0.2)


@contextlib.contextmanager
def local_cluster(directory: Path, registries: Sequence[str], port: int, nodes: int = 2,
                  cluster: str = "local", host_paths: Sequence[str] = (),
                  local: Mapping[str, Any] | None = None,
                  orchestrator: Mapping[str, Any] | None = None) -> Iterator[LocalCluster]:
    """Bring a cluster up in ``directory`` (server, nodes); tear it all down after.

    ``local`` and ``orchestrator``: settings added to the local provider's and the
    orchestrator's blocks (see :func:`cluster_spec`).
    """
    (directory / "fuzz.yaml").write_text(
        cluster_spec(cluster, nodes, registries, port, host_paths, local, orchestrator))
    with cluster_up(directory, nodes) as running:
        yield running


@contextlib.contextmanager
def cluster_up(directory: Path, nodes: int) -> Iterator[LocalCluster]:
    """Bring up the cluster whose ``fuzz.yaml`` is in ``directory`` (its server and its
    ``nodes`` nodes); destroy it and stop the server after."""
    running = LocalCluster(directory, nodes)
    try:
        running.must("init")
        running.must("server", "--detach")
        running.must("apply", "--auto-approve")
        running.wait_for_nodes()
        yield running
    finally:
        running.run("destroy", "--auto-approve")
        running.run("server", "--stop")
