"""The node agent's container runtime: OCI configs as data, and real jobs under runc.

The integration tests run busybox jobs through :class:`ContainerManager` (the
node's container monitor, runc underneath) and assert on what the job itself
saw: its cpuset, memory limit, user, env, cwd and mounts. After each of them the
monitor is shut down, and nothing may be left: no runc container, no cgroup, no
mount (in any process's mount namespace), no monitor process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fuzz.substrate.monitor.delete import delete_ended
from fuzz.substrate.monitor.files import new_status
from fuzz.substrate.runtime.bundle import (
    MASKED_PATHS,
    NOFILE_LIMIT,
    ContainerSpec,
    ContainerSpecError,
    DeviceNode,
    Hook,
    Mount,
    cpuset_string,
    device_node,
    hosts_file,
    oci_config,
    spec_from_json,
    spec_to_json,
)
from fuzz.substrate.runtime.containers import (
    ContainerExistsError,
    ContainerManager,
    ContainerNotFoundError,
    ContainerStateError,
    ContainerStatus,
    ContainerWaitTimeoutError,
)
from fuzz.substrate.runtime.trash import TRASH_PREFIX
from tests.support.orchestratorutil import wait_until

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "cat", "echo", "nproc", "id", "pwd", "env", "sleep", "dd", "head",
           "mount", "grep", "ls", "rm", "test")  # fmt: skip
MIB = 1024 * 1024


# --- the OCI config, as pure data ---------------------------------------------------------


def _spec(**changes: Any) -> ContainerSpec:
    fields: dict[str, Any] = {"id": "job-1", "rootfs": Path("/images/abc"), "args": ("true",)}
    fields.update(changes)
    return ContainerSpec(**fields)


def test_oci_config_for_a_non_root_job() -> None:
    spec = _spec(
        args=("python", "train.py"),
        env=("FOO=bar",),
        cwd="/work",
        uid=1000,
        gid=1000,
        cpus=(3, 0, 2),
        memory_bytes=64 * MIB,
        mounts=(Mount(Path("/data/in"), "/in", readonly=True), Mount(Path("/data/out"), "/out")),
    )
    config = oci_config(spec, "/state/job-1/bundle/rootfs", nofile=4096)
    process = config["process"]
    assert process["args"] == ["python", "train.py"]
    assert process["env"][0].startswith("PATH=") and process["env"][1:] == ["FOO=bar"]
    assert process["cwd"] == "/work"
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert process["noNewPrivileges"] is True
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]
    assert config["root"] == {"path": "/state/job-1/bundle/rootfs", "readonly": False}
    linux = config["linux"]
    assert [ns["type"] for ns in linux["namespaces"]] == ["pid", "ipc", "uts", "mount"]
    assert linux["cgroupsPath"] == "/fuzz/job-1"
    assert linux["resources"]["cpu"] == {"cpus": "0,2-3"}
    assert linux["resources"]["memory"] == {"limit": 64 * MIB, "swap": 64 * MIB}
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert set(MASKED_PATHS) <= set(linux["maskedPaths"]) and "/proc/sys" in linux["readonlyPaths"]
    mounts = {mount["destination"]: mount for mount in config["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
            "/tmp", "/in", "/out"} == set(mounts)  # fmt: skip
    assert "ro" in mounts["/sys"]["options"] and "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert mounts["/in"]["source"] == "/data/in" and mounts["/in"]["type"] == "bind"
    assert {"rbind", "ro"} <= set(mounts["/in"]["options"])
    assert "rbind" in mounts["/out"]["options"] and "ro" not in mounts["/out"]["options"]


def test_oci_config_for_root_devices_hooks_and_no_limits() -> None:
    gpu = DeviceNode("/dev/nvidia0", "c", 195, 0, 0o660, permissions="rw", uid=7, gid=8)
    hooks = (Hook("createContainer", "/usr/bin/nvidia-ctk", ("nvidia-ctk", "hook", "x"),
                  ("A=1",), 5),
             Hook("poststop", "/bin/true"), Hook("createContainer", "/bin/echo"))
    config = oci_config(
        _spec(uid=0, gid=0, env=("PATH=/opt/bin",), mounts=(Mount(Path("/scratch"), "/tmp"),),
              devices=(gpu,), hooks=hooks),
        "/r",
    )
    caps = config["process"]["capabilities"]
    assert "CAP_CHOWN" in caps["bounding"] and caps["bounding"] == caps["effective"]
    assert "CAP_NET_RAW" not in caps["bounding"] and "CAP_SYS_ADMIN" not in caps["bounding"]
    assert caps["ambient"] == [] and caps["inheritable"] == []
    assert config["process"]["env"] == ["PATH=/opt/bin"]
    resources = config["linux"]["resources"]
    assert "cpu" not in resources and "memory" not in resources
    assert resources["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rw"},
    ]
    assert config["linux"]["devices"] == [{"path": "/dev/nvidia0", "type": "c", "major": 195,
                                           "minor": 0, "fileMode": 0o660, "uid": 7, "gid": 8}]
    assert config["hooks"] == {
        "createContainer": [{"path": "/usr/bin/nvidia-ctk", "args": ["nvidia-ctk", "hook", "x"],
                             "env": ["A=1"], "timeout": 5}, {"path": "/bin/echo"}],
        "poststop": [{"path": "/bin/true"}],
    }
    assert "hooks" not in oci_config(_spec(), "/r")
    tmp = [m for m in config["mounts"] if m["destination"] == "/tmp"]
    assert len(tmp) == 1 and tmp[0]["type"] == "bind"  # the volume replaces the tmpfs


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "../escape"},
        {"id": "a/b"},
        {"id": ""},
        {"rootfs": Path("images/abc")},
        {"args": ()},
        {"env": ("NOVALUE",)},
        {"cwd": "work"},
        {"cwd": "/work/../etc"},
        {"uid": -1},
        {"cpus": (1, 1)},
        {"memory_bytes": -5},
        {"timeout_seconds": 0},
        {"hostname": "bad host"},
        {"hosts": ("ring-0 10.0.0.2",)},
        {"hosts": ("10.0.0.2",)},
        {"hosts": ("10.0.0.2 bad!name",)},
        {"hosts": ("10.0.0.2 ring-0\n10.0.0.9 evil",)},
        {"devices": (DeviceNode("/dev/a", "c", 1, 3), DeviceNode("/dev/a/", "c", 1, 5))},
        {"mounts": (Mount(Path("/a"), "/x"), Mount(Path("/b"), "/x/"))},
        {"job_namespaces": "proc/1/ns"},
        {"job_shm": "run/shm"},
    ],
)
def test_spec_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ContainerSpecError):
        _spec(**changes)


@pytest.mark.parametrize(
    ("source", "destination"),
    [("relative", "/x"), ("/a", "relative"), ("/a", "/x/../y"), ("/a", "/proc/x"), ("/a", "/")],
)
def test_mount_validation(source: str, destination: str) -> None:
    with pytest.raises(ContainerSpecError):
        Mount(Path(source), destination)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DeviceNode("/etc/passwd", "c", 1, 3), "must be under /dev/"),
        (lambda: DeviceNode("/dev/../etc", "c", 1, 3), "must not contain '..'"),
        (lambda: DeviceNode("/dev/x", "p", 1, 3), "type 'p' must be c or b"),  # type: ignore[arg-type]
        (lambda: DeviceNode("/dev/x", "c", -1, 3), "major must be a non-negative integer"),
        (lambda: DeviceNode("/dev/x", "c", 1, 3, permissions="rwx"), "must be letters of rwm"),
        (lambda: DeviceNode("/dev/x", "c", 1, 3, permissions=""), "must be letters of rwm"),
        (lambda: Hook("prestart", "/bin/true"), "hook stage 'prestart' must be one of"),
        (lambda: Hook("poststop", "true"), "hook path 'true' must be absolute"),
        (lambda: Hook("poststop", "/bin/true", env=("NOVALUE",)), "must look like KEY=VALUE"),
        (lambda: Hook("poststop", "/bin/true", timeout=0), "timeout must be a positive integer"),
    ],
)
def test_device_and_hook_validation(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ContainerSpecError, match=re.escape(message)):
        make()


def test_a_rank_gets_an_etc_hosts_naming_its_job_s_ranks(tmp_path: Path) -> None:
    spec = _spec(hosts=("10.0.0.2 ring-0", "10.1.0.5 ring-1"))
    assert hosts_file(spec) == ("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
                                "10.0.0.2 ring-0\n10.1.0.5 ring-1\n")
    assert spec_from_json(spec_to_json(spec)) == spec
    config = oci_config(spec, tmp_path / "rootfs", hosts=tmp_path / "hosts")
    assert {"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"),
            "options": ["rbind", "rprivate", "nosuid", "nodev", "ro"]} in config["mounts"]
    assert all(m["destination"] != "/etc/hosts" for m in oci_config(_spec(), "/r")["mounts"])


def test_a_rank_joins_its_job_s_pid_and_ipc_namespaces_and_has_its_own_others() -> None:
    spec = _spec(job_namespaces="/proc/42/ns")
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec
    assert oci_config(spec, "/r")["linux"]["namespaces"] == [
        {"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts"}, {"type": "mount"}]
    assert oci_config(_spec(), "/r")["linux"]["namespaces"] == [
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]


def test_a_rank_s_dev_shm_is_its_job_s_on_the_machine_and_its_own_tmpfs_otherwise() -> None:
    spec = _spec(job_shm="/run/fuzz/namespaces/m/j/shm")
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec
    (shm,) = [m for m in oci_config(spec, "/r")["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == {"destination": "/dev/shm", "type": "bind",
                   "source": "/run/fuzz/namespaces/m/j/shm",
                   "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"]}
    (own,) = [m for m in oci_config(_spec(), "/r")["mounts"] if m["destination"] == "/dev/shm"]
    assert own["type"] == "tmpfs"


def test_cpuset_string_and_spec_round_trip() -> None:
    assert cpuset_string([]) == ""
    assert cpuset_string([5]) == "5"
    assert cpuset_string([4, 0, 1, 2, 7, 8]) == "0-2,4,7-8"
    spec = _spec(cpus=(1,), mounts=(Mount(Path("/d"), "/d", True),), timeout_seconds=3.5,
                 devices=(DeviceNode("/dev/nvidia0", "c", 195, 0, permissions="rw"),),
                 hooks=(Hook("createContainer", "/bin/sh", ("sh", "-c", ":"), ("A=1",), 3),))
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_device_node_reads_the_host_device() -> None:
    null = device_node("/dev/null")
    assert (null.path, null.kind, null.major, null.minor, null.file_mode) == (
        "/dev/null", "c", 1, 3, 0o666)
    assert device_node("/dev/null", "/dev/nvidia0").path == "/dev/nvidia0"
    with pytest.raises(ContainerSpecError, match="not a character or block device"):
        device_node("/etc/hostname", "/dev/x")
    with pytest.raises(ContainerSpecError, match="No such file"):
        device_node("/dev/no-such-device")


# --- real containers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem, the way an unpacked image looks."""
    if not BUSYBOX.is_file():
        pytest.fail("busybox is missing: apt-get install busybox-static")
    if shutil.which("runc") is None:
        pytest.fail("runc is missing: apt-get install runc")
    rootfs = tmp_path_factory.mktemp("image") / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / directory).mkdir()
    (rootfs / "etc" / "motd").write_text("image\n")
    return rootfs


def _leftovers(base: Path, ids: list[str]) -> list[str]:
    """What a finished test left behind: runc containers, cgroups, mounts, monitor processes."""
    found = [str(path) for cid in ids for path in Path("/sys/fs/cgroup").glob(f"*/fuzz/{cid}")]
    found += [f"runc container {cid}" for cid in ids if _runc_knows(cid)]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            mountinfo = (proc / "mountinfo").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(base) in mountinfo:
            found.append(f"a mount under {base} seen by pid {proc.name}")
        if "fuzz.substrate.monitor.process" in cmdline and str(base) in cmdline:
            found.append(f"monitor process {proc.name}")
    return found


def _settle_and_check(manager: ContainerManager, base: Path) -> None:
    """Stop what runs, shut the monitor down, and assert that nothing is left under ``base``."""
    for status in manager.list():  # a failing test may leave a job running
        if not status.finished:
            manager.cancel(status.id, grace_seconds=0)
            manager.wait(status.id, timeout=10)
    ids = [status.id for status in manager.list()]
    manager.shutdown_monitor(timeout=20)
    if manager.root.is_dir():
        wait_until("the removed containers' directories to be deleted", lambda: not any(
            entry.name.startswith(TRASH_PREFIX) for entry in manager.root.iterdir()))
        assert sorted(entry.name for entry in manager.root.iterdir()) == sorted(ids)
    deadline = time.monotonic() + 5
    while (left := _leftovers(base, ids)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the monitor may still be exiting after its answer
    assert left == []


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ContainerManager]:
    """A manager on a fresh state dir; afterwards, checks that nothing was left behind."""
    manager = ContainerManager(tmp_path / "state")
    yield manager
    _settle_and_check(manager, tmp_path)


def _id(name: str) -> str:
    """A container id no other test (or test run) uses; runc's namespace is machine-wide."""
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


def _run(
    manager: ContainerManager, image: Path, script: str, **fields: Any
) -> tuple[ContainerStatus, str, str]:
    """Run ``sh -c script`` to the end; return its status, stdout and stderr."""
    spec = ContainerSpec(id=_id("job"), rootfs=image, args=("sh", "-c", script), **fields)
    manager.start(spec)
    status = manager.wait(spec.id, timeout=30)
    out = b"".join(manager.read_logs(spec.id, "stdout")).decode()
    err = b"".join(manager.read_logs(spec.id, "stderr")).decode()
    return status, out, err


def _monitor_pid(manager: ContainerManager, container_id: str) -> int:
    data = json.loads((manager.container_dir(container_id) / "status.json").read_text())
    return int(data["monitor_pid"])


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_for_output(manager: ContainerManager, container_id: str, text: bytes) -> None:
    deadline = time.monotonic() + 10
    while text not in b"".join(manager.read_logs(container_id)):
        assert time.monotonic() < deadline, f"{container_id} never printed {text!r}"
        time.sleep(0.02)


def test_job_sees_its_cpus_memory_user_env_cwd_and_volumes(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    os.chown(work, 1000, 1000)
    data.chmod(0o777)  # only the read-only mount may refuse the write
    stand_in = tmp_path / "stand-in"  # a harmless device: the null device's numbers
    os.mknod(stand_in, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    stand_in.chmod(0o666)
    script = (
        "nproc; cat /sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/memory/memory.limit_in_bytes;"
        " id -u; id -g; pwd; echo $GREETING; echo written > out.txt;"
        " echo no > /data/f || echo data-is-readonly;"
        " test -c /dev/gpu0 && echo x > /dev/gpu0 && echo has-gpu0; exit 3"
    )
    status, out, err = _run(
        manager,
        image,
        script,
        env=("GREETING=hello world",),
        cwd="/work",
        uid=1000,
        gid=1000,
        cpus=(1,),
        memory_bytes=48 * MIB,
        mounts=(Mount(work, "/work"), Mount(data, "/data", readonly=True)),
        devices=(device_node(str(stand_in), "/dev/gpu0"),),
    )
    expected = ["1", "1", str(48 * MIB), "1000", "1000", "/work", "hello world",
                "data-is-readonly", "has-gpu0"]  # fmt: skip
    assert out.splitlines() == expected, err
    assert "Read-only file system" in err
    assert (work / "out.txt").read_text() == "written\n"
    assert list(data.iterdir()) == []
    assert status.state == "exited" and status.exit_code == 3 and status.signal is None
    assert not (status.oom_killed or status.timed_out or status.cancelled) and status.error is None
    assert status.peak_memory_bytes is not None and status.peak_memory_bytes > 0
    assert status.started_at is not None and status.finished_at is not None
    assert status.started_at <= status.finished_at


def test_rootfs_is_writable_but_the_image_is_unchanged(
    manager: ContainerManager, image: Path
) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(path.relative_to(image)): (path.lstat().st_mode, path.lstat().st_size)
            for path in image.rglob("*")
        }

    before = snapshot()
    status, out, err = _run(
        manager,
        image,
        "nproc; cat /sys/fs/cgroup/cpuset/cpuset.cpus; echo job > /etc/motd; cat /etc/motd;"
        " echo new > /etc/new; rm /bin/env; test -e /bin/env || echo env-gone",
        uid=0,
        gid=0,
        cpus=(0,),
    )
    assert (status.exit_code, out.splitlines()) == (0, ["1", "0", "job", "env-gone"]), err
    assert snapshot() == before
    assert (image / "etc" / "motd").read_text() == "image\n"
    upper = manager.container_dir(status.id) / "upper"
    assert (upper / "etc" / "new").read_text() == "new\n"  # the job's changes, kept apart
    assert stat.S_ISCHR((upper / "bin" / "env").lstat().st_mode)  # a whiteout


def test_job_past_its_memory_limit_is_oom_killed(manager: ContainerManager, image: Path) -> None:
    spec = ContainerSpec(
        id=_id("oom"),
        rootfs=image,
        args=("dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"),
        memory_bytes=16 * MIB,
    )
    manager.start(spec)
    status = manager.wait(spec.id, timeout=30)
    assert status.state == "exited" and status.oom_killed
    assert status.signal == signal.SIGKILL and status.exit_code is None
    assert status.peak_memory_bytes is not None and status.peak_memory_bytes <= 16 * MIB


def test_wall_clock_timeout_kills_the_job(manager: ContainerManager, image: Path) -> None:
    spec = ContainerSpec(
        id=_id("timeout"),
        rootfs=image,
        args=("sleep", "60"),  # pid 1 without a handler: SIGTERM is ignored, SIGKILL is not
        timeout_seconds=0.5,
        stop_grace_seconds=0.3,
    )
    manager.start(spec)
    status = manager.wait(spec.id, timeout=15)
    assert status.timed_out and not status.cancelled and not status.oom_killed
    assert status.signal == signal.SIGKILL
    assert status.started_at is not None and status.finished_at is not None
    assert 0.8 <= status.finished_at - status.started_at < 10


def test_cancel_sends_sigterm_then_sigkill_after_the_grace(
    manager: ContainerManager, image: Path
) -> None:
    stubborn = ContainerSpec(
        id=_id("stubborn"),
        rootfs=image,
        args=("sh", "-c", 'trap "" TERM; echo ready; sleep 60'),
    )
    polite = ContainerSpec(
        id=_id("polite"),
        rootfs=image,
        args=("sh", "-c", 'trap "echo bye; exit 7" TERM; echo ready; sleep 60 & wait'),
    )
    for spec in (stubborn, polite):
        assert manager.start(spec).state == "running"
        _wait_for_output(manager, spec.id, b"ready")
    asked = time.time()
    manager.cancel(stubborn.id, grace_seconds=1.0)
    manager.cancel(polite.id, grace_seconds=1.0)
    gentle = manager.wait(polite.id, timeout=15)
    assert (gentle.exit_code, gentle.signal, gentle.cancelled) == (7, None, True)
    assert gentle.finished_at is not None and gentle.finished_at - asked < 1.0  # SIGTERM did it
    assert b"".join(manager.read_logs(polite.id)) == b"ready\nbye\n"
    killed = manager.wait(stubborn.id, timeout=15)
    assert (killed.exit_code, killed.signal, killed.cancelled) == (None, signal.SIGKILL, True)
    assert killed.finished_at is not None and killed.finished_at - asked >= 1.0
    manager.cancel(stubborn.id)  # finished: a no-op


def test_logs_are_captured_and_followed(manager: ContainerManager, image: Path) -> None:
    spec = ContainerSpec(
        id=_id("logs"),
        rootfs=image,
        args=("sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; echo oops >&2"),
    )
    manager.start(spec)
    chunks, states = [], []
    for chunk in manager.read_logs(spec.id, "stdout", follow=True, poll=0.05):
        chunks.append(chunk)
        states.append(manager.status(spec.id).state)
    assert b"".join(chunks) == b"".join(b"line%d\n" % i for i in range(1, 6))
    assert states[0] == "running" and len(chunks) >= 2  # streamed while it ran
    assert manager.status(spec.id).state == "exited"
    assert b"".join(manager.read_logs(spec.id, "stdout", offset=6)).startswith(b"line2\n")
    assert b"".join(manager.read_logs(spec.id, "stderr", follow=True)) == b"oops\n"


def test_a_new_manager_re_adopts_running_containers(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    spec = ContainerSpec(
        id=_id("adopt"),
        rootfs=image,
        args=("sh", "-c", "echo begin; sleep 2; echo end; exit 5"),
    )
    first = manager.start(spec)
    assert first.state == "running"
    monitor = _monitor_pid(manager, spec.id)
    assert _parent_pid(monitor) != os.getpid()  # it is nobody's child: agent restarts spare it
    with pytest.raises(ContainerExistsError):
        manager.start(spec)
    with pytest.raises(ContainerStateError):
        manager.remove(spec.id)
    with pytest.raises(ContainerWaitTimeoutError):
        manager.wait(spec.id, timeout=0.1)
    del manager  # the agent "restarts"

    agent = ContainerManager(tmp_path / "state")
    assert [(s.id, s.state) for s in agent.list()] == [(spec.id, "running")]
    final = agent.wait(spec.id, timeout=15)
    assert (final.state, final.exit_code, final.started_at) == ("exited", 5, first.started_at)
    assert b"".join(agent.read_logs(spec.id)) == b"begin\nend\n"
    second = ContainerSpec(id=_id("again"), rootfs=image, args=("true",))
    agent.start(second)
    assert agent.wait(second.id, timeout=15).exit_code == 0
    assert _monitor_pid(agent, second.id) == monitor  # one monitor, shared by every manager
    agent.remove(second.id)
    agent.remove(spec.id)
    assert agent.list() == []
    with pytest.raises(ContainerNotFoundError):
        agent.status(spec.id)
    with pytest.raises(ContainerNotFoundError):
        agent.status("../state")


def test_remove_frees_the_id_at_once_and_the_directory_goes_in_the_background(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    leftover = manager.root / f"{TRASH_PREFIX}gone.1234"  # what a stopped agent left
    (leftover / "upper").mkdir(parents=True)
    spec = ContainerSpec(id=_id("removed"), rootfs=image, args=("true",))
    manager.start(spec)
    assert manager.wait(spec.id, timeout=30).exit_code == 0
    manager.remove(spec.id)
    assert not (manager.root / spec.id).exists()
    # what holds the job's env (its secrets) is gone already, not left for the trash
    trashed = [entry for entry in manager.root.iterdir()
               if entry.name.startswith(f"{TRASH_PREFIX}{spec.id}.")]
    assert not [entry for entry in trashed for name in ("config.json", "spec.json")
                if (entry / name).exists()]
    with pytest.raises(ContainerNotFoundError):
        manager.status(spec.id)
    assert manager.list() == []
    wait_until("the trash to be emptied", lambda: not any(
        entry.name.startswith(TRASH_PREFIX) for entry in manager.root.iterdir()))
    again = manager.start(ContainerSpec(id=spec.id, rootfs=image, args=("true",)))
    assert again.id == spec.id  # the id is free for a new container
    assert manager.wait(spec.id, timeout=30).exit_code == 0


def _runc_knows(container_id: str) -> bool:
    """Whether runc (its default root) keeps a state for ``container_id``. Its state
    folder, not `runc list`, which fails when another test's container is deleted while
    it reads them all (it did, under three test workers)."""
    return (Path("/run/runc") / container_id).exists()


def test_a_prepared_container_runs_only_once_started_and_reports_its_own_exit(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    marker.mkdir(mode=0o777)
    marker.chmod(0o777)  # the job runs as nobody
    specs = [ContainerSpec(id=_id(f"prep{code}"), rootfs=image,
                           args=("sh", "-c", f"touch /out/{code}; echo hello {code}; exit {code}"),
                           mounts=(Mount(marker, "/out"),)) for code in (3, 4)]
    for spec in specs:
        prepared = manager.start(spec, prepare=True)
        assert prepared.state == "starting"
        assert _runc_knows(spec.id)  # created: its init waits for `runc start`
    time.sleep(0.3)  # a job that ran anyway would have written its marker by now
    assert sorted(os.listdir(marker)) == []
    for spec in reversed(specs):
        assert manager.start_prepared(spec.id).state in ("running", "exited")
    for code, spec in zip((3, 4), specs, strict=True):
        final = manager.wait(spec.id, timeout=30)
        assert (final.state, final.exit_code, final.cancelled) == ("exited", code, False)
        assert b"".join(manager.read_logs(spec.id)) == f"hello {code}\n".encode()
    assert sorted(os.listdir(marker)) == ["3", "4"]
    with pytest.raises(ContainerStateError):
        manager.start_prepared(specs[0].id)  # started once only


def _prepared_marking_job(manager: ContainerManager, image: Path, tmp_path: Path,
                          name: str) -> tuple[Path, ContainerSpec]:
    """A job prepared (not started) that, once it runs, leaves a file in the folder returned."""
    marker = tmp_path / "ran"
    marker.mkdir(mode=0o777)
    marker.chmod(0o777)  # the job runs as nobody
    spec = ContainerSpec(id=_id(name), rootfs=image, args=("sh", "-c", "echo > /out/ran"),
                         mounts=(Mount(marker, "/out"),))
    manager.start(spec, prepare=True)
    return marker, spec


def test_a_prepared_container_cancelled_before_its_start_is_removed_unstarted(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    marker, spec = _prepared_marking_job(manager, image, tmp_path, "prepcancel")
    manager.cancel(spec.id, grace_seconds=10)
    final = manager.wait(spec.id, timeout=30)
    assert (final.state, final.cancelled) == ("exited", True), final
    with pytest.raises(ContainerStateError):
        manager.start_prepared(spec.id)
    manager.remove(spec.id)
    assert not _runc_knows(spec.id)
    assert os.listdir(marker) == []  # the user's process never ran


def test_a_prepared_container_whose_monitor_dies_is_killed_never_started(
    manager: ContainerManager, image: Path, tmp_path: Path, assert_pid_gone: Callable[..., None]
) -> None:
    marker, spec = _prepared_marking_job(manager, image, tmp_path, "prepdead")
    monitor = int((manager.state_dir / "monitor.lock").read_text())
    os.kill(monitor, signal.SIGKILL)
    assert_pid_gone(monitor)
    final = manager.status(spec.id)  # a new monitor settles it
    assert final.state == "failed"
    assert "monitor died while starting it" in (final.error or "")
    assert not _runc_knows(spec.id)
    assert os.listdir(marker) == []


def test_setup_failures_end_as_failed_with_the_reason(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    no_image = ContainerSpec(id=_id("noimage"), rootfs=tmp_path / "missing", args=("true",))
    status = manager.start(no_image)
    assert status.state == "failed" and status.error is not None
    assert "missing is not a directory" in status.error
    bad_command = ContainerSpec(id=_id("nocmd"), rootfs=image, args=("/no/such/program",))
    manager.start(bad_command)
    status = manager.wait(bad_command.id, 30)
    assert status.state == "failed" and status.error is not None and "\n" not in status.error
    assert status.error.startswith("runc run failed:") and "/no/such/program" in status.error
    assert manager.spec(bad_command.id) == bad_command
    assert manager.spec(no_image.id) == no_image


def test_a_dead_monitor_is_reported_and_its_containers_removed(
    manager: ContainerManager, image: Path, assert_pid_gone: Callable[..., None]
) -> None:
    specs = [ContainerSpec(id=_id("orphan"), rootfs=image, args=("sleep", "60")) for _ in "ab"]
    for spec in specs:
        manager.start(spec)
    monitor = _monitor_pid(manager, specs[0].id)
    os.kill(monitor, signal.SIGKILL)
    assert_pid_gone(monitor)
    status = manager.status(specs[0].id)  # starts a new monitor, which settles both
    assert status.state == "failed" and status.error is not None and "\n" not in status.error
    assert f"monitor (pid {monitor}) died" in status.error
    assert manager.status(specs[1].id).state == "failed"
    for spec in specs:
        state = subprocess.run(["runc", "state", spec.id], capture_output=True, check=False)
        assert state.returncode != 0  # runc no longer knows it
    after = ContainerSpec(id=_id("after"), rootfs=image, args=("true",))
    manager.start(after)
    assert manager.wait(after.id, timeout=15).exit_code == 0
    assert _monitor_pid(manager, after.id) not in (monitor, None)
    for spec in [*specs, after]:
        manager.remove(spec.id)
    assert manager.list() == []


def test_managers_starting_at_once_share_one_monitor(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    managers = [manager, *(ContainerManager(tmp_path / "state") for _ in range(3))]
    specs = [ContainerSpec(id=_id("race"), rootfs=image, args=("true",)) for _ in managers]
    errors: list[BaseException] = []

    def start(agent: ContainerManager, spec: ContainerSpec) -> None:
        try:
            agent.start(spec)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pairs = zip(managers, specs, strict=True)
    threads = [threading.Thread(target=start, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {manager.wait(spec.id, timeout=15).exit_code for spec in specs} == {0}
    assert len({_monitor_pid(manager, spec.id) for spec in specs}) == 1
    with pytest.raises(ContainerExistsError):
        managers[1].start(specs[0])


def test_a_job_on_another_image_gets_that_image(
    manager: ContainerManager, image: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(image, other, symlinks=True)
    (other / "etc" / "motd").write_text("other\n")
    seen = []
    for rootfs in (image, image, other, image):  # the monitor bets on the last image
        status, out, err = _run(manager, rootfs, "cat /etc/motd; echo x > /etc/motd", uid=0, gid=0)
        assert status.exit_code == 0, err
        seen.append(out)
    assert seen == ["image\n", "image\n", "other\n", "image\n"]
    assert (other / "etc" / "motd").read_text() == "other\n"


def test_a_state_dir_with_a_long_path_works(image: Path, tmp_path: Path) -> None:
    state = tmp_path / ("d" * 60) / ("e" * 60) / "state"
    assert len(str(state / "monitor.sock")) > 108
    agent = ContainerManager(state)
    try:
        status, out, _ = _run(agent, image, "echo hi")
        assert (status.exit_code, out) == (0, "hi\n")
    finally:
        _settle_and_check(agent, tmp_path)


@pytest.mark.parametrize("how", ["shutdown", "sigterm"])
def test_stopping_the_monitor_stops_its_jobs(
    manager: ContainerManager, image: Path, how: str, assert_pid_gone: Callable[..., None]
) -> None:
    spec = ContainerSpec(
        id=_id("stop"),
        rootfs=image,
        args=("sh", "-c", 'trap "echo bye; exit 3" TERM; echo ready; sleep 60 & wait'),
        stop_grace_seconds=5,
    )
    manager.start(spec)
    _wait_for_output(manager, spec.id, b"ready")
    monitor = _monitor_pid(manager, spec.id)
    if how == "shutdown":
        manager.shutdown_monitor(timeout=15)
    else:
        os.kill(monitor, signal.SIGTERM)
    assert_pid_gone(monitor, timeout=15)
    status = manager.status(spec.id)
    assert (status.state, status.exit_code, status.cancelled) == ("exited", 3, True)
    assert b"".join(manager.read_logs(spec.id)) == b"ready\nbye\n"
    assert subprocess.run(["runc", "state", spec.id], capture_output=True).returncode != 0
    assert [entry.name for entry in manager.root.iterdir()] == [spec.id]  # no spare left


def test_a_shutdown_with_a_grace_cap_kills_a_job_that_ignores_sigterm_in_time(
    manager: ContainerManager, image: Path
) -> None:
    # A deleted node's jobs get at most the provider's stop_timeout, not their own grace:
    # a job ignoring SIGTERM with a 60 s grace made the local provider's delete fail
    # ("the container monitor (pid …) did not exit") before (issue 20, point 2).
    spec = ContainerSpec(id=_id("deaf"), rootfs=image,
                         args=("sh", "-c", "trap '' TERM; echo ready; sleep 120 & wait"),
                         stop_grace_seconds=60)
    manager.start(spec)
    _wait_for_output(manager, spec.id, b"ready")
    started = time.monotonic()
    manager.shutdown_monitor(timeout=20, grace=1)
    assert time.monotonic() - started < 20
    status = manager.status(spec.id)
    assert (status.state, status.signal, status.cancelled) == ("exited", signal.SIGKILL, True)


def test_an_init_that_ends_before_its_runc_does_is_not_reaped_as_a_stray(
    image: Path, tmp_path: Path
) -> None:
    """A container's init becomes the monitor's child as soon as runc's child leaves it,
    which can be before the process the monitor started as runc exits (here a wrapper that
    lingers after runc). An init that ends in that window was reaped as a stray while
    another job's request woke the loop, and its job failed: "finding the container's init:
    [Errno 3] No such process"."""
    lingering_runc = tmp_path / "lingering-runc"
    lingering_runc.write_text(  # runs a container, then stays a while before it exits
        f'#!/bin/sh\n{shutil.which("runc")} "$@"; code=$?\n'
        'case " $* " in *" run "*) sleep 0.6;; esac\nexit $code\n'
    )
    lingering_runc.chmod(0o755)
    agent = ContainerManager(tmp_path / "state", runc=str(lingering_runc))
    quick = ContainerSpec(id=_id("quick"), rootfs=image, args=("sh", "-c", "echo done; exit 3"))
    results: list[ContainerStatus] = []
    try:
        thread = threading.Thread(target=lambda: results.append(agent.start(quick)))
        thread.start()
        for _ in range(10):  # requests wake the monitor's loop, which looks for strays,
            with contextlib.suppress(ContainerNotFoundError):  # while the wrapper sleeps
                agent.status(quick.id)
            time.sleep(0.05)
        thread.join(30)
        status = agent.wait(quick.id, timeout=30)
        assert (status.state, status.exit_code, status.error) == ("exited", 3, None)
        assert b"".join(agent.read_logs(quick.id, "stdout")) == b"done\n"
    finally:
        _settle_and_check(agent, tmp_path)


def test_a_monitor_dying_mid_start_leaves_no_container_behind(
    image: Path, tmp_path: Path, assert_pid_gone: Callable[..., None]
) -> None:
    slow_runc = tmp_path / "slow-runc"
    slow_runc.write_text(  # slow to run a container only
        f'#!/bin/sh\ncase " $* " in *" run "*) sleep 1;; esac\nexec {shutil.which("runc")} "$@"\n'
    )
    slow_runc.chmod(0o755)
    agent = ContainerManager(tmp_path / "state", runc=str(slow_runc))
    spec = ContainerSpec(id=_id("midstart"), rootfs=image, args=("sleep", "60"))
    results: list[ContainerStatus] = []
    try:
        agent.start(ContainerSpec(id=_id("warm"), rootfs=image, args=("true",)))
        thread = threading.Thread(target=lambda: results.append(agent.start(spec)))
        thread.start()
        time.sleep(0.3)  # runc run is under way (asleep in the wrapper)
        monitor = int((tmp_path / "state" / "monitor.lock").read_text())
        os.kill(monitor, signal.SIGKILL)
        assert_pid_gone(monitor)
        thread.join(30)
        assert len(results) == 1 and results[0].state == "failed"
        assert results[0].error is not None and "died while starting it" in results[0].error
        state = subprocess.run(["runc", "state", spec.id], capture_output=True, check=False)
        assert state.returncode != 0  # the late runc run was waited for, then deleted
    finally:
        _settle_and_check(agent, tmp_path)


def test_an_ended_container_is_deleted_without_runc(image: Path, tmp_path: Path) -> None:
    """The monitor's own delete removes exactly what `runc delete` would: cgroups and state."""
    container_id = _id("ended")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = ContainerSpec(id=container_id, rootfs=image, args=("true",), memory_bytes=32 * MIB)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    (bundle / "config.json").write_text(json.dumps(oci_config(spec, image, nofile=nofile)))
    started = subprocess.run(["runc", "run", "--detach", "--bundle", str(bundle), container_id],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 10
        while "stopped" not in subprocess.run(["runc", "state", container_id],
                                              capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the container did not end"
            time.sleep(0.02)
        cgroups = list(Path("/sys/fs/cgroup").glob(f"*/fuzz/{container_id}"))
        assert cgroups and _runc_knows(container_id)
        assert delete_ended(container_id)
        assert not [p for p in cgroups if p.exists()]
        assert not _runc_knows(container_id)
    finally:
        subprocess.run(["runc", "delete", "--force", container_id], capture_output=True)


def test_a_container_with_live_processes_is_left_to_runc(
    manager: ContainerManager, image: Path
) -> None:
    spec = ContainerSpec(id=_id("busy"), rootfs=image, args=("sleep", "30"))
    manager.start(spec)
    assert not delete_ended(spec.id)  # its cgroups are busy: nothing may be half-deleted
    assert _runc_knows(spec.id)
    assert manager.status(spec.id).state == "running"


@pytest.mark.parametrize("state", [
    None,  # no state.json
    "not json",
    {"id": "another", "cgroup_paths": {}},
    {"id": "ID", "cgroup_paths": {}, "config": {"hooks": {"poststop": [{"path": "/x"}]}}},
    {"id": "ID", "cgroup_paths": {}, "intel_rdt_path": "/sys/fs/resctrl/ID"},
    {"id": "ID", "cgroup_paths": {"memory": "/tmp/elsewhere"}},
])
def test_anything_unusual_in_the_runc_state_is_left_to_runc(
    tmp_path: Path, state: object
) -> None:
    directory = tmp_path / "ID"
    directory.mkdir()
    if state is not None:
        text = state if isinstance(state, str) else json.dumps(state)
        (directory / "state.json").write_text(text)
    assert not delete_ended("ID", state_root=str(tmp_path))
    assert directory.is_dir()


# --- status.json: one document, one definition ------------------------------------------------


def test_the_status_document_has_every_field_the_agent_reads() -> None:
    document = new_status("job-1", "/usr/bin/runc", monitor_pid=42)
    fields = {field.name for field in dataclasses.fields(ContainerStatus)}
    assert fields <= document.keys()
    assert document["runc"] == "/usr/bin/runc" and document["monitor_pid"] == 42
    assert ContainerStatus.from_json("job-1", document) == ContainerStatus("job-1", "starting")
    assert ContainerStatus.from_json("job-1", new_status("job-1")) == ContainerStatus(
        "job-1", "starting")


def test_hosts_lines_name_services_and_peers_say_how_far_they_reach() -> None:
    """A workflow's service ``my_db`` is named ``my_db.svc``; a peer entry is an address
    (both ways, any port), ADDRESS:PROTO/PORT (one port there) or jobs[:PROTO/PORT]."""
    spec = _spec(hosts=("10.0.0.2 my_db.svc", "10.0.0.3 web-.svc"),
                 peers=("10.0.0.2", "10.0.0.3:tcp/8080", "jobs:udp/53", "jobs"))
    assert spec_from_json(spec_to_json(spec)) == spec
    for bad in ("10.0.0.2:sctp/1", "10.0.0.2:tcp/0", "nodes:tcp/80", "10.0.0.300"):
        with pytest.raises(ContainerSpecError, match="is not ADDRESS, ADDRESS:PROTO/PORT"):
            _spec(peers=(bad,))
    with pytest.raises(ContainerSpecError, match="valid host names"):
        _spec(hosts=("10.0.0.2 _db.svc",))
