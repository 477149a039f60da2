"""kill -9 of apply and destroy at random moments never corrupts state nor duplicates nodes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.engine.model import State
from tests.support.cliutil import (
    agent_pids,
    fuzz_command,
    kill_agents,
    read_state,
    run_fuzz,
    write_spec,
)

NODES = 20
ROUNDS = 10


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A 20-node local spec; agents left behind by a failing test are killed afterwards."""
    write_spec(tmp_path, NODES)
    yield tmp_path
    kill_agents(tmp_path)


def _kill_at(cluster_dir: Path, delay: float, *args: str) -> None:
    proc = subprocess.Popen(fuzz_command(*args), cwd=cluster_dir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _node_dirs(cluster_dir: Path) -> list[Path]:
    """The node directories (the provider keeps a lock file beside them)."""
    return [p for p in (cluster_dir / ".fuzz" / "nodes").glob("*/*") if p.is_dir()]


def _check_consistent(cluster_dir: Path) -> None:
    state_file = cluster_dir / ".fuzz" / "state.json"
    if state_file.exists():
        State.from_json(read_state(cluster_dir))  # parses completely, or raises
    node_dirs = _node_dirs(cluster_dir)
    pids = agent_pids(cluster_dir)
    assert len(pids) <= NODES, f"{len(pids)} agents for {NODES} nodes: duplicates"
    assert len(node_dirs) <= NODES, f"{len(node_dirs)} node directories for {NODES} nodes"


@pytest.mark.slow
def test_kill_9_at_random_moments_then_reapply_gives_exactly_the_spec(
    cluster_dir: Path,
) -> None:
    seed = int(os.environ.get("FUZZ_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"FUZZ_CRASH_SEED={seed}")
    for round_ in range(ROUNDS):
        command = ("apply", "--auto-approve") if round_ % 2 == 0 else (
            "destroy", "--auto-approve")
        _kill_at(cluster_dir, rng.uniform(0.3, 3.0), *command)
        _check_consistent(cluster_dir)

    final = run_fuzz(cluster_dir, "apply", "--auto-approve", "--lock-timeout", "10s")
    assert final.code == 0, final.err + final.out
    state = State.from_json(read_state(cluster_dir))
    assert len(state.resources) == NODES
    assert {r.status for r in state.resources.values()} == {"created"}
    live = set(agent_pids(cluster_dir))
    assert len(live) == NODES
    assert {int(r.observed["pid"]) for r in state.resources.values()} == live
    assert run_fuzz(cluster_dir, "plan", "--detailed-exitcode").code == 0

    destroyed = run_fuzz(cluster_dir, "destroy", "--auto-approve")
    assert destroyed.code == 0, destroyed.err
    assert agent_pids(cluster_dir) == []
    assert _node_dirs(cluster_dir) == []
