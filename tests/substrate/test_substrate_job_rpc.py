"""Jobs through a real agent: images from a real registry, containers run by runc, over gRPC."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from fuzz.clients.agent import (
    AgentClient,
    AgentError,
    AgentNotFoundError,
    AgentResourceExhaustedError,
)
from fuzz.errors import FuzzError
from fuzz.fsutil import read_json
from fuzz.resources import ResourceRequest
from fuzz.substrate.capacity.inventory import read_inventory
from fuzz.substrate.capacity.leases import LeaseBook, LeaseRequest
from fuzz.substrate.jobs import JOBS_FILE, JobRecord, JobRequest, JobRunner, JobSettings
from fuzz.substrate.runtime.containers import ContainerManager
from tests.substrate.test_substrate_agent import (
    TOKEN,
    Agent,
    _spawn,
    _stop,
    _token_file,
    _wait_ready,
)
from tests.support.registry import PushedImage

SCRIPT = ("cat /sys/fs/cgroup/cpuset/cpuset.cpus; cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
          " id -u; id -g; pwd; echo $GREETING; cat /data/in.txt; echo out > /data/out.txt")


def _processes_mentioning(path: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(path) in argv and "fuzz.substrate" in argv:
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def running_node(
    tmp_path: Path, image: PushedImage, *extra: str
) -> Iterator[tuple[Agent, AgentClient]]:
    """An agent (with ``extra`` options) that may pull ``image``; all it started is gone after."""
    agent = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                   "--insecure-registry", image.registry.host, *extra)
    _wait_ready(agent)
    client = AgentClient(agent.endpoint, TOKEN)
    try:
        yield agent, client
    finally:
        client.close()
        _stop(agent)
        ContainerManager(agent.state_dir).shutdown_monitor()  # jobs outlive agents; not tests
        for pid in _processes_mentioning(tmp_path):
            os.kill(pid, signal.SIGKILL)
    listed = subprocess.run(["runc", "list", "-q"], capture_output=True, text=True).stdout
    assert not [c for c in listed.split() if c.startswith("job-")], listed


@pytest.fixture
def node(tmp_path: Path, busybox_image: PushedImage) -> Iterator[tuple[Agent, AgentClient]]:
    """An agent that may pull from the test registry; everything it started is gone after."""
    with running_node(tmp_path, busybox_image) as running:
        yield running


def _restart(agent: Agent, registry_host: str) -> Agent:
    _stop(agent)
    again = _spawn(agent.state_dir, agent.token_file, "--insecure-registry", registry_host)
    _wait_ready(again)
    return again


def test_a_job_runs_confined_by_its_lease(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage, tmp_path: Path
) -> None:
    _, client = node
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "in.txt").write_text("from the host\n")
    os.chmod(volume, 0o777)
    lease = client.acquire_lease(1, memory_bytes=64 * 2**20, holder="test")
    started = client.start_container(
        "job-confined", busybox_image.reference, lease.id, args=["sh", "-c", SCRIPT],
        env=["GREETING=hello"], cwd="/tmp", uid=1000, gid=1000,
        mounts=[(str(volume), "/data", False)])
    assert started.state in ("running", "exited") and started.lease_id == lease.id
    assert started.image_digest == busybox_image.digest
    done = client.wait_container("job-confined", 30)
    assert (done.state, done.has_exit_code, done.exit_code) == ("exited", True, 0), done
    assert done.peak_memory_bytes > 0
    lines = b"".join(client.stream_logs("job-confined")).decode().split("\n")
    assert lines[:7] == [",".join(map(str, lease.host_cpus)), str(64 * 2**20), "1000", "1000",
                         "/tmp", "hello", "from the host"]
    assert (volume / "out.txt").read_text() == "out\n"


def test_lease_and_start_in_one_call_then_remove_with_the_lease(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node
    whole = client.inventory().cores
    started = client.start_container("job-one-call", busybox_image.reference,
                                     lease=ResourceRequest(cores=1, memory_bytes=32 * 2**20),
                                     args=["sh", "-c", "echo out; echo err >&2"])
    leases = client.list_leases()
    assert [lease.id for lease in leases] == [started.lease_id]
    assert leases[0].holder == "job-one-call"
    done = client.wait_container("job-one-call", 30)
    assert (done.exit_code, done.stdout_bytes, done.stderr_bytes) == (0, 4, 4)
    client.remove_container("job-one-call", release_lease=True)
    assert client.list_leases() == []
    # a start that fails gives its lease back; a node too small says what is short
    with pytest.raises(AgentError):
        client.start_container("job-bad-image", "docker://127.0.0.1:9/none:latest",
                               lease=ResourceRequest(cores=1))
    assert client.list_leases() == []
    with pytest.raises(AgentResourceExhaustedError, match="cores"):
        client.start_container("job-too-big", busybox_image.reference,
                               lease=ResourceRequest(cores=whole + 1))


def test_prepared_jobs_start_in_one_rpc_each_and_one_whose_lease_went_never_runs(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node
    request = ResourceRequest(cores=1, memory_bytes=32 * 2**20)
    for name, code in (("job-prep-a", 5), ("job-prep-b", 6)):
        prepared = client.start_container(name, busybox_image.reference, lease=request,
                                          args=["sh", "-c", f"echo {name}; exit {code}"],
                                          prepare_only=True)
        assert prepared.state == "starting" and prepared.lease_id
    assert client.get_container("job-prep-a").state == "starting"
    started = client.start_prepared_container("job-prep-b")
    assert started.state in ("running", "exited")
    for name, code in (("job-prep-a", 5), ("job-prep-b", 6)):
        if name == "job-prep-a":
            client.start_prepared_container(name)
        done = client.wait_container(name, 30)
        assert (done.state, done.exit_code) == ("exited", code), done
        assert b"".join(client.stream_logs(name)) == f"{name}\n".encode()
        client.remove_container(name, release_lease=True)
    with pytest.raises(AgentError, match="no container"):
        client.start_prepared_container("job-prep-a")  # removed
    # a prepared job whose lease is given back is cancelled, unstarted, when asked to start
    gone = client.start_container("job-prep-gone", busybox_image.reference, lease=request,
                                  args=["true"], prepare_only=True)
    client.release_lease(gone.lease_id)
    with pytest.raises(AgentError, match="not held"):
        client.start_prepared_container("job-prep-gone")
    done = client.wait_container("job-prep-gone", 30)
    assert (done.state, done.cancelled, done.started_at.seconds) == ("exited", True, 0), done
    client.remove_container("job-prep-gone")
    assert client.list_leases() == []


def test_pull_reports_progress_and_clear_errors(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node
    progress = list(client.pull_image(busybox_image.reference))
    assert progress[-1].digest == busybox_image.digest and progress[-1].size_bytes > 0
    assert any("unpacking" in p.message for p in progress)
    missing = busybox_image.reference.replace("busybox:latest", "nope:1")
    with pytest.raises(AgentNotFoundError, match="not found in registry"):
        list(client.pull_image(missing))
    lease = client.acquire_lease(1)
    with pytest.raises(AgentError, match="not reachable"):
        client.start_container("job-down", "docker://127.0.0.1:1/x:1", lease.id, args=["true"])


def test_registry_credentials_are_used_per_request_and_never_logged(
    tmp_path: Path, auth_busybox_image: PushedImage
) -> None:
    registry = auth_busybox_image.registry
    assert registry.username and registry.password
    agent = _spawn(tmp_path / "state", _token_file(tmp_path / "secrets"),
                   "--insecure-registry", registry.host)
    _wait_ready(agent)
    client = AgentClient(agent.endpoint, TOKEN)
    try:
        with pytest.raises(AgentError, match="refused the credentials"):
            list(client.pull_image(auth_busybox_image.reference, (registry.username, "wrong")))
        pulled = list(client.pull_image(auth_busybox_image.reference,
                                        (registry.username, registry.password)))
        assert pulled[-1].digest == auth_busybox_image.digest
    finally:
        client.close()
        _stop(agent)
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert registry.password.encode() not in path.read_bytes(), path
    assert registry.password not in agent.stderr()


def test_root_only_under_an_allow_root_lease(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node
    plain = client.acquire_lease(1)
    with pytest.raises(AgentError, match="needs a lease acquired with allow_root"):
        client.start_container("job-root", busybox_image.reference, plain.id, args=["id", "-u"],
                               uid=0)
    default = client.start_container("job-nobody", busybox_image.reference, plain.id,
                                     args=["id", "-u"])
    assert client.wait_container(default.id, 30).exit_code == 0
    assert b"".join(client.stream_logs("job-nobody")) == b"65534\n"
    root = client.acquire_lease(1, allow_root=True)
    client.start_container("job-root", busybox_image.reference, root.id, args=["id", "-u"],
                           uid=0)
    assert client.wait_container("job-root", 30).exit_code == 0
    assert b"".join(client.stream_logs("job-root")) == b"0\n"
    with pytest.raises(AgentError, match="not held"):
        client.start_container("job-x", busybox_image.reference, "no-such-lease", args=["true"])


def test_logs_follow_a_running_job_and_cancel_stops_one(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node
    lease = client.acquire_lease(1)
    client.start_container("job-talk", busybox_image.reference, lease.id,
                           args=["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done"])
    followed = b"".join(client.stream_logs("job-talk", follow=True, timeout=30))
    assert followed == b"line1\nline2\nline3\n"
    assert client.get_container("job-talk").state == "exited"
    client.start_container("job-sleep", busybox_image.reference, lease.id, args=["sleep", "60"])
    started = time.monotonic()
    client.cancel_container("job-sleep", grace_seconds=1)
    done = client.wait_container("job-sleep", 30)
    assert done.cancelled and done.state == "exited" and time.monotonic() - started < 10
    assert {c.id for c in client.list_containers()} == {"job-talk", "job-sleep"}
    client.remove_container("job-talk")
    assert {c.id for c in client.list_containers()} == {"job-sleep"}


def test_an_agent_stops_promptly_while_callers_wait_for_and_follow_a_silent_job(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    agent, client = node
    lease = client.acquire_lease(1)
    client.start_container("job-quiet", busybox_image.reference, lease.id, args=["sleep", "60"])
    ended: list[str] = []

    def wait() -> None:
        with contextlib.suppress(AgentError):
            client.wait_container("job-quiet", 30)
        ended.append("wait")

    def follow() -> None:
        with contextlib.suppress(AgentError):
            b"".join(client.stream_logs("job-quiet", follow=True, timeout=30))
        ended.append("follow")

    callers = [threading.Thread(target=wait), threading.Thread(target=follow)]
    for caller in callers:
        caller.start()
    time.sleep(1)  # both calls are under way in the agent
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    agent.proc.wait(30)
    assert time.monotonic() - started < 5, "no worker outlives its call by more than a poll"
    for caller in callers:
        caller.join(10)
    assert sorted(ended) == ["follow", "wait"]


def test_a_restarted_agent_readopts_its_running_jobs(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    agent, client = node
    lease = client.acquire_lease(1)
    client.start_container("job-long", busybox_image.reference, lease.id,
                           args=["sh", "-c", "sleep 2; echo survived; exit 4"])
    client.close()
    again = _restart(agent, busybox_image.registry.host)
    agent.proc = again.proc  # the fixture stops whichever process runs now
    fresh = AgentClient(again.endpoint, TOKEN)
    try:
        assert fresh.get_container("job-long").state == "running"
        done = fresh.wait_container("job-long", 30)
        assert (done.exit_code, done.lease_id) == (4, lease.id)
        assert b"".join(fresh.stream_logs("job-long")) == b"survived\n"
        assert [x.id for x in fresh.list_leases()] == [lease.id]
    finally:
        fresh.close()


def test_a_restarted_runner_holds_only_the_images_of_running_jobs(
    tmp_path: Path, busybox_image: PushedImage
) -> None:
    """jobs.json is written when a job starts only; a restart squares it with the containers."""
    state = tmp_path / "state"
    settings = JobSettings(state, insecure_registries=(busybox_image.registry.host,))
    book = LeaseBook(read_inventory(gpus=False), None)

    def start(runner: JobRunner, job: str, *args: str) -> str:
        lease = book.acquire(LeaseRequest(cores=1, memory_bytes=64 * 2**20))
        runner.start(JobRequest(id=job, image=busybox_image.reference, lease_id=lease.id,
                                args=args))
        return lease.id

    runner = settings.open_runner(lambda: book)
    try:
        for job in ("job-removed", "job-ended"):
            lease = start(runner, job, "/bin/true")
            assert runner.wait(job, 30).container.exit_code == 0
            book.release(lease)
        start(runner, "job-running", "sleep", "30")
        runner.remove("job-removed")
        assert "job-removed" in (read_json(state / JOBS_FILE) or {})  # the file is behind
        digest = busybox_image.digest
        assert runner.images.in_use(digest) == 1

        again = settings.open_runner(lambda: book)  # what a restarted agent makes
        assert again.images.in_use(digest) == 1  # the running job's hold, and no other
        assert again.status("job-ended").record == JobRecord(digest, ANY, released=True)
        assert again.status("job-running").record == JobRecord(digest, ANY)
        with pytest.raises(FuzzError):
            again.status("job-removed")
    finally:
        with contextlib.suppress(FuzzError):
            runner.containers.cancel("job-running", 0)
            runner.wait("job-running", 30)
        runner.containers.shutdown_monitor()
