"""A multinode job's IPC and PID namespaces on one machine: made, joined, kept apart, ended.

Real holder processes and real namespaces (``/proc/PID/ns``), as the agents of one
machine use them (:mod:`fuzz.substrate.launch.sharedns`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from fuzz.substrate.launch.sharedns import SharedNamespaces
from tests.support.orchestratorutil import wait_until


def _namespace(folder: str, kind: str) -> str:
    return os.readlink(f"{folder}/{kind}")


def _gone(process: Path) -> bool:
    try:
        return ") Z " in (process / "stat").read_text()
    except OSError:
        return True


def test_one_jobs_containers_share_namespaces_and_another_jobs_do_not(tmp_path: Path) -> None:
    first_agent = SharedNamespaces(tmp_path / "namespaces")
    second_agent = SharedNamespaces(tmp_path / "namespaces")
    joined0 = first_agent.join("token-of-job-a", "job-a-0")
    joined1 = second_agent.join("token-of-job-a", "job-a-1")
    joined_other = second_agent.join("token-of-job-b", "job-b-0")
    assert joined0 == joined1
    rank0, other = joined0.namespaces, joined_other.namespaces
    # one /dev/shm for the job's containers, another job's apart, writable by any uid
    assert joined0.shm != joined_other.shm
    assert os.stat(joined0.shm).st_mode & 0o7777 == 0o1777
    # a tmpfs of its own, as a container's /dev/shm: not the disk's, nor /run's
    assert os.path.ismount(joined0.shm) and os.path.ismount(joined_other.shm)
    for kind in ("ipc", "pid"):
        own = os.readlink(f"/proc/self/ns/{kind}")
        assert _namespace(rank0, kind) not in (own, _namespace(other, kind)), kind
        assert _namespace(other, kind) != own, kind

    holder = Path(rank0).parent
    first_agent.leave("job-a-0")
    assert not _gone(holder), "a container of the job is still in them"
    second_agent.leave("job-a-1")
    wait_until("job a's holder to end", lambda: _gone(holder))
    assert not os.path.exists(joined0.shm), "the last container out removes the job's shm"
    assert not _gone(Path(other).parent), "job b's namespaces are not job a's to end"
    second_agent.leave("job-b-0")
    second_agent.leave("never-joined")
    wait_until("job b's holder to end", lambda: _gone(Path(other).parent))
    assert sorted(path.name for path in (tmp_path / "namespaces").iterdir()) == [".lock"]


def test_a_job_that_comes_back_after_its_holder_ended_gets_new_namespaces(
        tmp_path: Path) -> None:
    agent = SharedNamespaces(tmp_path / "namespaces")
    first = agent.join("token", "rank-0").namespaces
    first_ipc = _namespace(first, "ipc")
    agent.leave("rank-0")
    wait_until("the holder to end", lambda: _gone(Path(first).parent))
    again = agent.join("token", "rank-0-retry").namespaces
    assert again != first and os.path.exists(f"{again}/pid")
    assert _namespace(again, "ipc") != first_ipc or not os.path.exists(f"{first}/ipc")
    agent.leave("rank-0-retry")


def test_the_holder_is_out_of_reach_of_the_jobs_processes_that_see_it(tmp_path: Path) -> None:
    # the job's processes see the holder (pid 1 of their PID namespace), which runs as root
    # in the host's other namespaces: even a root job (whose capabilities are a few, never
    # CAP_SYS_PTRACE) may not read it, as it may read a process of its own
    agent = SharedNamespaces(tmp_path / "namespaces")
    holder = Path(agent.join("token", "rank-0").namespaces).parent
    try:
        def read_as_root_without_capabilities(path: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--", "cat", path],
                capture_output=True, text=True, timeout=30, check=False)
        assert read_as_root_without_capabilities("/proc/self/environ").returncode == 0
        refused = read_as_root_without_capabilities(f"{holder}/environ")
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
    finally:
        agent.leave("rank-0")
