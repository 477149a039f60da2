"""The default seccomp profile: refused syscalls fail with EPERM under real runc, and
ordinary jobs (a shell, Python with threads, processes, sockets, MPI-style shared
memory) still run.

The jobs run in a busybox root with the host's ``/usr`` mounted read-only (for
Python), through :class:`~fuzz.substrate.runtime.containers.ContainerManager` and runc,
as a non-root user and as root (root in a job has a few capabilities, never
CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

from fuzz.substrate.runtime import seccomp
from fuzz.substrate.runtime.bundle import ContainerSpec, Mount, oci_config
from fuzz.substrate.runtime.containers import ContainerManager
from tests.substrate.test_substrate_containers import _run, manager  # noqa: F401  (manager: a fixture)

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "grep", "wc", "sort", "head", "seq", "mkdir", "rm", "ls",
           "unshare", "mount", "swapoff", "true")  # fmt: skip
JOBS = Path(__file__).parent / "seccomp_jobs"
PYTHON = "/usr/bin/python3"
REFUSED = {"clone-newuser": "EPERM", "keyctl-join-session": "EPERM", "userfaultfd": "EPERM",
           "io_uring_setup": "ENOSYS", "personality-no-aslr": "EPERM",
           "ptrace-traceme": "EPERM"}  # fmt: skip
DENIED = ("mount", "umount2", "pivot_root", "unshare", "setns", "clone3", "keyctl", "add_key",
          "request_key", "ptrace", "bpf", "perf_event_open", "kexec_load", "kexec_file_load",
          "reboot", "swapon", "swapoff", "init_module", "finit_module", "delete_module",
          "open_by_handle_at", "name_to_handle_at", "userfaultfd", "io_uring_setup",
          "fsopen", "move_mount", "open_tree", "acct", "settimeofday", "personality")  # fmt: skip
USERS = pytest.mark.parametrize("uid", [1000, 0], ids=["user", "root"])


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root with mount points for the host's /usr and the job scripts."""
    if not Path(PYTHON).is_file() or shutil.which("runc") is None or not BUSYBOX.is_file():
        pytest.fail("needs python3, runc and busybox-static: apt-get install python3 runc "
                    "busybox-static")
    rootfs = tmp_path_factory.mktemp("seccomp-image") / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    for directory in ("proc", "sys", "dev", "etc", "mnt", "usr", "jobs", "tmp"):
        (rootfs / directory).mkdir()
    (rootfs / "tmp").chmod(0o1777)  # as in any image: runc gives the tmpfs this mode
    for link in ("lib", "lib64"):  # merged /usr, as on Debian
        (rootfs / link).symlink_to(f"usr/{link}")
    return rootfs


def _job(jobs: ContainerManager, image: Path, script: str, uid: int) -> tuple[int, str, str]:
    """Run ``script`` as ``uid``; its exit code, stdout and stderr."""
    status, out, err = _run(jobs, image, script, uid=uid, gid=uid, cwd="/tmp",
                            mounts=(Mount(Path("/usr"), "/usr", readonly=True),
                                    Mount(JOBS, "/jobs", readonly=True)))
    assert status.state == "exited" and status.error is None, status
    assert status.exit_code is not None
    return status.exit_code, out, err


def test_every_job_config_carries_the_profile() -> None:
    for uid in (1000, 0):
        spec = ContainerSpec(id="job-1", rootfs=Path("/images/a"), args=("true",), uid=uid)
        profile = oci_config(spec, "/r")["linux"]["seccomp"]
        assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
        assert profile["architectures"] == [seccomp.ARCHITECTURES[os.uname().machine]]
    assert seccomp.default_profile("aarch64")["architectures"] == ["SCMP_ARCH_AARCH64"]
    allowed = {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
               and "args" not in rule for name in rule["names"]}
    assert allowed.isdisjoint(DENIED), allowed & set(DENIED)
    clone = next(rule for rule in profile["syscalls"] if rule["names"] == ["clone"])
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]


def test_every_name_in_the_profile_is_a_syscall() -> None:
    """libseccomp (runc's) knows each name on x86_64 or aarch64: no typo is silently skipped."""
    library = ctypes.CDLL("libseccomp.so.2")
    library.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    library.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    arches = [library.seccomp_arch_resolve_name(arch) for arch in (b"x86_64", b"aarch64")]
    names = [name for rule in seccomp.default_profile()["syscalls"] for name in rule["names"]]
    assert len(names) == len(set(names)) + len(seccomp.PERSONAS) - 1  # personality: one rule each
    unknown = [name for name in set(names)
               if all(library.seccomp_syscall_resolve_name_arch(arch, name.encode()) < 0
                      for arch in arches)]
    assert unknown == []


@USERS
def test_refused_syscalls_fail_with_eperm(manager: ContainerManager, image: Path,  # noqa: F811
                                          uid: int) -> None:
    code, out, err = _job(manager, image, (
        f"{PYTHON} /jobs/probe.py;"
        " unshare -U true; echo unshare-user=$?;"
        " unshare -Urm mount -t tmpfs x /mnt; echo mount-in-userns=$?"), uid)
    lines = out.splitlines()
    assert dict(line.split() for line in lines[:len(REFUSED)]) == REFUSED, out + err
    assert lines[len(REFUSED):] == ["unshare-user=1", "mount-in-userns=1"], out + err
    assert err.splitlines() == ["unshare: unshare failed: Operation not permitted"] * 2
    assert code == 0


@USERS
def test_ordinary_jobs_still_run(manager: ContainerManager, image: Path,  # noqa: F811
                                 uid: int) -> None:
    code, out, err = _job(manager, image, (
        "mkdir -p work && seq 1 1000 | sort -r | head -3 > work/top && cat work/top | wc -l;"
        " ls work; rm -r work;"
        f" {PYTHON} /jobs/workload.py"), uid)
    assert out.splitlines() == [
        "3", "top", "threads 285", "fork-pool 285", "spawn-pool 285", "semaphore ok",
        "subprocess hi", "tcp ping", "socketpair unix", "asyncio ok", "shared-memory child",
        "process_vm_readv rank-1 data", "get_mempolicy 0 0", "files file 8"], out + err
    assert code == 0, err
