"""Task sandboxes: a task array's tasks on one node as processes of one runc container.

Real runc containers through :class:`ContainerManager`: the tasks of one sandbox group
share one container (one runc container for N tasks), each with its own env, logs, exit
code, cgroup (CPUs, memory), cancel and timeout; the task server is untrusted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fuzz.substrate.monitor.sandbox import LAUNCH_SECONDS
from fuzz.substrate.runtime.bundle import ContainerSpec, sandbox_key
from fuzz.substrate.runtime.containers import ContainerManager, ContainerStatus
from fuzz.substrate.runtime.execproc import ExecSpec
from tests.substrate import test_substrate_containers as containers
from tests.support.orchestratorutil import wait_until

MIB = 1024 * 1024
image = containers.image  # the busybox root those tests use


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ContainerManager]:
    """A manager on a fresh state dir; afterwards nothing may be left (sandboxes included)."""
    manager = ContainerManager(tmp_path / "state")
    yield manager
    sandboxes = {json.loads(path.read_text()).get("sandbox")
                 for path in manager.root.glob("*/status.json")} - {None}
    containers._settle_and_check(manager, tmp_path)
    assert _runc_containers(tmp_path) == []
    assert [str(path) for name in sandboxes
            for path in Path("/sys/fs/cgroup").glob(f"*/fuzz/{name}")] == []


def _sandbox_bundles() -> list[str]:
    """The bundles of every runc container on the machine (a container deleted while runc
    lists them fails the listing: asked again)."""
    for _ in range(20):
        listing = subprocess.run(["runc", "list", "--format", "json"], capture_output=True,
                                 text=True, check=False)
        if listing.returncode == 0:
            return [entry["bundle"] for entry in json.loads(listing.stdout or "[]") or []]
        time.sleep(0.05)
    raise AssertionError(f"runc list failed: {listing.stderr}")


def _task(image: Path, group: str, script: str, **fields: Any) -> ContainerSpec:
    task_id = f"t-task-{uuid.uuid4().hex[:8]}"
    env = (f"FB_TASK_ID={task_id}", *fields.pop("env", ()))
    return ContainerSpec(id=task_id, rootfs=image, args=("sh", "-c", script), env=env,
                         sandbox=group, **fields)


def _runc_containers(state: Path) -> list[str]:
    """The runc containers whose bundles are under ``state``."""
    return [bundle for bundle in _sandbox_bundles() if bundle.startswith(str(state))]


def _logs(manager: ContainerManager, task_id: str, stream: str) -> str:
    return b"".join(manager.read_logs(task_id, stream)).decode()


def _finish(manager: ContainerManager, spec: ContainerSpec, timeout: float = 30) -> ContainerStatus:
    return manager.wait(spec.id, timeout=timeout)


def test_tasks_of_one_group_share_one_container_with_their_own_env_logs_and_exit_codes(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    script = 'echo "out $FB_TASK_ID"; echo "err $N" >&2; exit $N'
    specs = [_task(image, group, script, env=(f"N={n}",)) for n in range(4)]
    for spec in specs:
        manager.start(spec)
    statuses = [_finish(manager, spec) for spec in specs]
    for n, (spec, status) in enumerate(zip(specs, statuses, strict=True)):
        assert status.state == "exited" and status.exit_code == n, status
        assert _logs(manager, spec.id, "stdout") == f"out {spec.id}\n"
        assert _logs(manager, spec.id, "stderr") == f"err {n}\n"
    sandboxes = {json.loads((manager.container_dir(s.id) / "status.json").read_text())["sandbox"]
                 for s in specs}
    assert len(sandboxes) == 1
    assert len(_runc_containers(tmp_path)) == 1  # the sandbox lives on for its idle time
    wait_until("the idle sandbox to end", lambda: _runc_containers(tmp_path) == [], timeout=15)


def test_a_task_that_writes_to_a_file_is_seen_by_the_next_one_of_its_sandbox(
    manager: ContainerManager, image: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    script = 'if [ "$STEP" = 1 ]; then echo shared > /tmp/mark; else cat /tmp/mark; fi'
    first = _task(image, group, script, env=("STEP=1",), uid=0, gid=0)  # /tmp is root's
    manager.start(first)
    assert _finish(manager, first).exit_code == 0
    second = _task(image, group, script, env=("STEP=2",), uid=0, gid=0)
    manager.start(second)
    assert _finish(manager, second).exit_code == 0
    assert _logs(manager, second.id, "stdout") == "shared\n"


def test_another_group_gets_another_sandbox_and_no_view_of_the_first(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    script = 'if [ "$MINE" = 1 ]; then echo secret > /tmp/mine; sleep 5; else cat /tmp/mine; fi'
    mine = _task(image, f"wf-a-{uuid.uuid4().hex[:6]}/array", script, env=("MINE=1",), uid=0)
    manager.start(mine)
    wait_until("the first task to run", lambda: manager.status(mine.id).state == "running")
    own = _task(image, mine.sandbox, script, env=("MINE=0",), uid=0)
    manager.start(own)
    assert _finish(manager, own).exit_code == 0 and _logs(manager, own.id, "stdout") == "secret\n"
    theirs = _task(image, f"wf-b-{uuid.uuid4().hex[:6]}/array", script, env=("MINE=0",), uid=0)
    manager.start(theirs)
    status = _finish(manager, theirs)
    assert status.exit_code == 1 and _logs(manager, theirs.id, "stdout") == ""
    assert len(_runc_containers(tmp_path)) == 2
    manager.cancel(mine.id, grace_seconds=0)
    assert _finish(manager, mine).cancelled


def test_a_task_sees_its_own_cpus_and_its_memory_limit_kills_only_it(
    manager: ContainerManager, image: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    cpus = sorted(os.sched_getaffinity(0))
    script = ('if [ "$HOG" = 1 ]; then dd if=/dev/zero of=/dev/null bs=64M count=1;'
              ' else grep Cpus_allowed_list /proc/self/status; fi')
    one = _task(image, group, script, env=("HOG=0",), cpus=(cpus[-1],), memory_bytes=16 * MIB)
    hog = _task(image, group, script, env=("HOG=1",), cpus=(cpus[0],), memory_bytes=16 * MIB)
    manager.start(one)
    manager.start(hog)
    assert _finish(manager, one).exit_code == 0
    assert _logs(manager, one.id, "stdout").split()[-1] == str(cpus[-1])
    status = _finish(manager, hog)
    assert status.state == "exited" and status.oom_killed and status.signal == signal.SIGKILL
    after = _task(image, group, script, env=("HOG=0",), cpus=(cpus[0],), memory_bytes=16 * MIB)
    manager.start(after)
    assert _finish(manager, after).exit_code == 0
    assert _logs(manager, after.id, "stdout").split()[-1] == str(cpus[0])


def test_cancel_and_timeout_kill_a_task_and_its_children_only(
    manager: ContainerManager, image: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    script = ('case "$ROLE" in other) sleep 3; echo survived;; victim) sleep 61 & sleep 61 & wait;;'
              ' *) sleep 61;; esac')
    other = _task(image, group, script, env=("ROLE=other",))
    victim = _task(image, group, script, env=("ROLE=victim",))
    slow = _task(image, group, script, env=("ROLE=slow",), timeout_seconds=0.5,
                 stop_grace_seconds=0.2)
    for spec in (other, victim, slow):
        manager.start(spec)
    wait_until("the victim to run", lambda: manager.status(victim.id).state == "running")
    time.sleep(0.3)
    manager.cancel(victim.id, grace_seconds=0)
    status = _finish(manager, victim, timeout=10)
    assert status.cancelled and status.signal == signal.SIGKILL
    timed = _finish(manager, slow, timeout=10)
    assert timed.timed_out and timed.finished_at is not None and timed.started_at is not None
    assert timed.finished_at - timed.started_at < 5
    assert _finish(manager, other).exit_code == 0
    assert _logs(manager, other.id, "stdout") == "survived\n"
    leftover = subprocess.run(["pgrep", "-x", "-f", "sleep 61"], capture_output=True, text=True)
    assert leftover.stdout == ""


WAITING_SCRIPT = 'if [ "$WAIT" = 1 ]; then sleep 60; else echo again; fi'


def _a_running_task(
    manager: ContainerManager, image: Path, group: str
) -> tuple[ContainerSpec, str, int]:
    """A task of ``group`` running (``WAITING_SCRIPT`` with WAIT=1), its sandbox's id and
    the host pid of that sandbox's task server."""
    running = _task(image, group, WAITING_SCRIPT, env=("WAIT=1",))
    manager.start(running)
    wait_until("the task to run", lambda: manager.status(running.id).state == "running")
    sandbox = json.loads((manager.container_dir(running.id) / "status.json").read_text())[
        "sandbox"]
    server = int(json.loads((manager.root / sandbox / "status.json").read_text())["pid"])
    return running, sandbox, server


def test_a_killed_task_server_fails_its_tasks_and_the_next_task_gets_a_new_sandbox(
    manager: ContainerManager, image: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    running, first, server = _a_running_task(manager, image, group)
    os.kill(server, signal.SIGKILL)
    status = _finish(manager, running, timeout=10)
    assert status.state == "failed" and status.error is not None
    assert "task sandbox" in status.error and "died" in status.error
    after = _task(image, group, WAITING_SCRIPT, env=("WAIT=0",))
    manager.start(after)
    assert _finish(manager, after).exit_code == 0
    assert json.loads((manager.container_dir(after.id) / "status.json").read_text())[
        "sandbox"] != first


def test_a_task_server_that_never_answers_fails_its_task_and_its_sandbox_ends(
    manager: ContainerManager, image: Path
) -> None:
    """The server is the user's: one that stops answering (here stopped from outside) must
    not keep a task, its lease and a cancel waiting for ever."""
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    running, _, server = _a_running_task(manager, image, group)
    os.kill(server, signal.SIGSTOP)
    stuck = _task(image, group, WAITING_SCRIPT, env=("WAIT=0",))
    started = time.monotonic()
    manager.start(stuck)
    status = _finish(manager, stuck, timeout=LAUNCH_SECONDS + 20)
    assert status.state == "failed" and status.error is not None
    assert "did not start the task" in status.error, status.error
    assert LAUNCH_SECONDS <= time.monotonic() - started < LAUNCH_SECONDS + 15
    assert _finish(manager, running, timeout=10).state == "failed"  # its sandbox ended


def test_a_dead_monitor_s_sandbox_is_deleted_by_the_next_and_its_task_failed(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    task = _task(image, f"wf-{uuid.uuid4().hex[:6]}/array", "sleep 60")
    manager.start(task)
    wait_until("the task to run", lambda: manager.status(task.id).state == "running")
    status = json.loads((manager.container_dir(task.id) / "status.json").read_text())
    os.kill(status["monitor_pid"], signal.SIGKILL)
    wait_until("the monitor to die", lambda: not Path(f"/proc/{status['monitor_pid']}").exists()
               or "Z" in Path(f"/proc/{status['monitor_pid']}/stat").read_text().split()[2])
    ended = manager.wait(task.id, timeout=20)  # a new monitor settles what the dead one left
    assert ended.state == "failed" and ended.error is not None and "died" in ended.error
    assert _runc_containers(tmp_path) == []
    assert list(Path("/sys/fs/cgroup").glob(f"*/fuzz/{status['sandbox']}")) == []
    assert not (manager.root / status["sandbox"]).exists()


def test_exec_into_a_task_runs_in_its_sandbox_with_its_env(
    manager: ContainerManager, image: Path
) -> None:
    group = f"wf-{uuid.uuid4().hex[:6]}/array"
    script = 'echo "$FB_TASK_ID" > /tmp/mark; sleep 30'
    task = _task(image, group, script, uid=0, gid=0)
    manager.start(task)
    wait_until("the task to run", lambda: manager.status(task.id).state == "running")
    wait_until("its mark", lambda: manager.status(task.id).state == "running" and (
        _exec(manager, task.id, "cat /tmp/mark") == (0, f"{task.id}\n")))
    assert _exec(manager, task.id, 'echo "$FB_TASK_ID"') == (0, f"{task.id}\n")
    manager.cancel(task.id, grace_seconds=0)
    assert _finish(manager, task).cancelled


def _exec(manager: ContainerManager, task_id: str, script: str) -> tuple[int, str]:
    process = manager.start_exec(ExecSpec(container_id=task_id, args=("sh", "-c", script)))
    try:
        process.close_stdin()
        out = b"".join(data for stream, data in process.output() if stream == "stdout")
        return process.wait(), out.decode()
    finally:
        process.close()


def test_without_a_group_or_with_devices_a_task_gets_a_container_of_its_own(image: Path) -> None:
    assert sandbox_key(ContainerSpec(id="a", rootfs=image, args=("true",))) is None
    grouped = ContainerSpec(id="a", rootfs=image, args=("true",), sandbox="wf/job",
                            env=("FB_TASK_ID=0",), cpus=(0,))
    other_task = ContainerSpec(id="b", rootfs=image, args=("true",), sandbox="wf/job",
                               env=("FB_TASK_ID=1",), cpus=(1,))
    other_job = ContainerSpec(id="a", rootfs=image, args=("true",), sandbox="wf/job2")
    more_memory = ContainerSpec(id="a", rootfs=image, args=("true",), sandbox="wf/job",
                                memory_bytes=MIB)
    assert sandbox_key(grouped) == sandbox_key(other_task)
    assert sandbox_key(grouped) not in (sandbox_key(other_job), sandbox_key(more_memory))
