"""A multinode job's IPC namespace on one machine: made, joined, kept apart, ended.

Real holder processes and real namespaces (``/proc/PID/ns/ipc``), as the agents of
one machine use them (:mod:`fuzz.substrate.launch.sharedipc`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.substrate.launch.sharedipc import SharedIpc
from tests.support.orchestratorutil import wait_until


def _namespace(path: str) -> str:
    return os.readlink(path)


def test_one_jobs_containers_share_one_namespace_and_another_jobs_do_not(
        tmp_path: Path) -> None:
    first_agent, second_agent = SharedIpc(tmp_path / "ipc"), SharedIpc(tmp_path / "ipc")
    rank0 = first_agent.join("token-of-job-a", "job-a-0")
    rank1 = second_agent.join("token-of-job-a", "job-a-1")
    other = second_agent.join("token-of-job-b", "job-b-0")
    own = os.readlink("/proc/self/ns/ipc")
    assert rank0 == rank1
    assert _namespace(rank0) not in (own, _namespace(other))
    assert _namespace(other) != own

    holder = Path(rank0).parent.parent
    first_agent.leave("job-a-0")
    assert holder.exists(), "a container of the job is still in it"
    second_agent.leave("job-a-1")
    wait_until("the job's holder to end", lambda: not holder.exists()
               or ") Z " in (holder / "stat").read_text())
    assert Path(other).exists(), "job b's namespace is not job a's to end"
    second_agent.leave("job-b-0")
    second_agent.leave("never-joined")
    assert sorted(path.name for path in (tmp_path / "ipc").iterdir()) == [".lock"]


def test_a_job_that_comes_back_after_its_holder_ended_gets_a_new_namespace(
        tmp_path: Path) -> None:
    agent = SharedIpc(tmp_path / "ipc")
    first = agent.join("token", "rank-0")
    agent.leave("rank-0")
    again = agent.join("token", "rank-0-retry")
    assert again != first and os.path.exists(again)
    agent.leave("rank-0-retry")
