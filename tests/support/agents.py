"""Killing a local node's agent and starting it again in place, as a supervisor would.

The local provider starts each agent with its node directory as state dir
(:mod:`fuzz.default_plugins.local_provider`). A restart in place runs the same
command line again, with the same environment, in the same directory: the
agent re-adopts its containers from its container monitor, keeps its token and
leases, and registers its new endpoint with the orchestrator.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fuzz.clients.agent import AgentClient
from fuzz.fsutil import read_json
from fuzz.orchestrate.datadir import orchestrator_client_tls
from fuzz.substrate.statedir import INFO_FILE
from fuzz.testing.cluster import LocalCluster
from tests.support.cliutil import agent_pids, read_state
from tests.support.orchestratorutil import wait_until


@dataclass(frozen=True)
class AgentCommand:
    """How one agent was started: enough to start it again in place."""

    argv: list[str]
    env: dict[str, str]
    state_dir: Path


def state_dir(cluster: LocalCluster, address: str) -> Path:
    """The state directory of node ``address``'s agent."""
    return Path(read_state(cluster.directory)["resources"][address]["observed"]["state_dir"])


def agent_pid(cluster: LocalCluster, address: str) -> int:
    """The pid of node ``address``'s live agent."""
    pids = agent_pids(state_dir(cluster, address))
    assert len(pids) == 1, f"{address}: agents {pids}"
    return pids[0]


def kill_agent(cluster: LocalCluster, address: str) -> AgentCommand:
    """kill -9 node ``address``'s agent (its container monitor lives on); how it ran."""
    pid = agent_pid(cluster, address)
    proc = Path("/proc") / str(pid)
    argv = [part.decode() for part in proc.joinpath("cmdline").read_bytes().split(b"\0") if part]
    env = dict(entry.decode().split("=", 1)
               for entry in proc.joinpath("environ").read_bytes().split(b"\0") if b"=" in entry)
    os.kill(pid, signal.SIGKILL)
    directory = state_dir(cluster, address)
    wait_until(f"agent {pid} gone", lambda: pid not in agent_pids(directory), timeout=10)
    return AgentCommand(argv, env, directory)


def start_again(command: AgentCommand) -> subprocess.Popen[bytes]:
    """Start the agent of ``command`` again in place (the caller reaps it)."""
    with open(command.state_dir / "agent.log", "ab") as log:
        return subprocess.Popen(command.argv, cwd=command.state_dir, env=command.env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


@contextlib.contextmanager
def restarted(command: AgentCommand) -> Iterator[subprocess.Popen[bytes]]:
    """Start the agent of ``command`` again in place; reaped when the block ends."""
    proc = start_again(command)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def live_endpoint(directory: Path) -> str:
    """The endpoint the agent of ``directory`` published ('' while none answers)."""
    info = read_json(directory / INFO_FILE) or {}
    return str(info.get("endpoint") or "")


def agent_client(cluster: LocalCluster, address: str) -> AgentClient:
    """A client for node ``address``'s live agent, calling it as the orchestrator does."""
    directory = state_dir(cluster, address)
    token = (directory / "token").read_text().strip()
    return AgentClient(live_endpoint(directory), token,
                       tls=orchestrator_client_tls(cluster.data_dir, address))
