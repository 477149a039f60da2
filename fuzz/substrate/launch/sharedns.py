"""One IPC and PID namespace for a multinode job's containers on one machine: shared memory.

The local provider's nodes are agents on one machine. The ranks of an MPI job on two
of them are in two containers, each with its own namespaces, so MPI talks TCP over
the job network between them: tens of µs a message where one machine's shared memory
takes under one. UCX moves messages through SysV shared memory between two processes
that booted the same kernel (its system id is the boot id), are in the same IPC
namespace (its shared-memory transports' reachability check compares them,
``uct_sm_iface_is_reachable`` in UCX's ``src/uct/sm/base/sm_iface.c``) and see each
other's pid (an ``mm`` endpoint reads its peer's ``/proc/PID/stat`` when it connects,
UCX's keepalive; another PID namespace makes that "failed to get start time for pid"
and the endpoint fails). So the agents of one machine (those that share a
``--share-cpus-with`` directory) put the containers of one job, there, in one IPC and
one PID namespace of the job's own, with one ``/dev/shm`` (:class:`SharedNamespaces`),
and tell UCX to use SysV shared memory and Open MPI libfabric's shm provider
(:data:`SHARED_MEMORY_ENVIRONMENT`).

Which MPI gains: Debian's MPICH (ch4:ucx) gives UCX its peers' whole addresses and
uses shared memory between the containers. Open MPI 4.1's ``pml ucx`` gives UCX only
the network part of the address of a peer that its runtime places on another node
(``UCP_WORKER_ADDRESS_FLAG_NET_ONLY``, ``ompi/mca/pml/ucx/pml_ucx.c``), so its ranks on
two nodes would talk TCP whatever the namespaces; they get ``pml ob1`` with libfabric's
``shm`` provider instead (``btl ofi``), which takes any peer whose region it can open
in ``/dev/shm``: the job's containers on the machine share one (docs/architecture.md,
"MPI without SSH").

The namespaces are kept by a holder process (``unshare --ipc --pid --fork``, then a
small loop that reaps what is orphaned in the PID namespace, of which it is pid 1),
which any agent of the machine can name (``/proc/PID/ns/ipc``, ``.../pid``) in its
container's runtime config, whatever mount namespace its container monitor is in. It
is found by the hash of the job's launch token, a secret that only the job's own
containers' requests carry: a container of another job (another tenant's or the same
user's) never joins it. Each container that joins leaves a mark (``users/CONTAINER``);
the last one to leave kills the holder, which ends whatever is left in its PID namespace.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.substrate.monitor.syscalls import SysError, mount_tmpfs, unmount

RUN_DIR = Path("/run/fuzz/namespaces")  # memory-backed: gone at reboot, as the holders are
HOLDER_FILE = "holder"
USERS_DIR = "users"
LOCK_FILE = ".lock"
SHM_DIR = "shm"
SHARED_MEMORY_ENVIRONMENT = (
    # SysV shared memory needs one IPC namespace; posix (its peers' segments through
    # /proc/PID/fd) and cma (process_vm_readv) are left out, as they were before the
    # job's containers shared /dev/shm (neither measured between them); tcp for peers
    # on other machines
    "UCX_TLS=self,sysv,tcp",
    # but no tcp lane between the machine's ranks: sysv has no zero-copy put, so UCX
    # (1.13, 1.18) takes tcp's for puts and huge rendezvous, and a tcp lane is progressed
    # by an epoll_wait in every poll of the ranks' busy loop (about five an allreduce,
    # each through the seccomp filter): without tcp's puts those go through sysv's
    # copies, and the loop makes no syscall, as on the host (strace -c, measured)
    "UCX_TCP_PUT_ENABLE=n",
    # Open MPI: pml ucx would give UCX only the network part of the address of a peer
    # on another node (UCP_WORKER_ADDRESS_FLAG_NET_ONLY), so ob1 instead, with vader
    # between ranks of one container and libfabric's shm provider (btl ofi, two-sided
    # only) between containers: it maps its peers' regions from the shared /dev/shm and
    # sends small messages inline (larger ones by process_vm_readv, which the seccomp
    # profile allows and the shared PID namespace makes reach the peer). The
    # ofi btl reaches every peer and outranks tcp, so tcp would carry nothing: left out
    "OMPI_MCA_pml=ob1",
    "OMPI_MCA_btl=self,vader,ofi",
    "OMPI_MCA_btl_ofi_mode=2",
    "OMPI_MCA_btl_ofi_provider_include=shm",
)
"""What a container in shared namespaces gets in its environment (the job's own
environment comes after, so a user's ``UCX_TLS`` or ``OMPI_MCA_*`` wins)."""
# pid 1 of the job's PID namespace, which the job's processes see though it runs as
# root in the host's other namespaces. The kernel keeps them out of it (reading or
# writing another process's memory needs, besides its uid, every capability it has, and
# jobs have few); it is also made non-dumpable first (PR_SET_DUMPABLE, 0: then only
# CAP_SYS_PTRACE, which no job has, reaches it), should it ever run with fewer. It says
# it is in, then reaps orphans until killed.
_REAPER = ("import ctypes, os, time\n"
           "if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:\n"
           "    raise SystemExit('prctl(PR_SET_DUMPABLE) failed')\n"
           "print('in', flush=True)\nwhile True:\n"
           "    try:\n        os.wait()\n    except ChildProcessError:\n        time.sleep(1)\n")


class SharedNamespacesError(FuzzError):
    """The job's namespaces could not be made."""


def machine_id(shared: Path) -> str:
    """The id of the agents that share the directory ``shared`` (``--share-cpus-with``):
    the hash of its path. They report it as their :data:`~fuzz.resources.MACHINE_LABEL`
    (their jobs' containers can share namespaces and ``/dev/shm``)."""
    return hashlib.sha256(str(shared.absolute()).encode()).hexdigest()[:32]


def machine_directory(shared: Path) -> Path:
    """Where the agents that share the directory ``shared`` (``--share-cpus-with``) keep
    their jobs' namespaces: under :data:`RUN_DIR`, in a folder named by
    :func:`machine_id` (not in ``shared``, whose folders are the local provider's nodes)."""
    return RUN_DIR / machine_id(shared)


@dataclass(frozen=True)
class JobNamespaces:
    """What a container of the job joins: ``namespaces``, the folder (``/proc/PID/ns``)
    of its IPC and PID namespaces; ``shm``, the host folder that is its ``/dev/shm``."""

    namespaces: str
    shm: str


class SharedNamespaces:
    """The IPC and PID namespaces of the multinode jobs on this machine, under
    ``directory`` (shared by the machine's agents; one folder per job, named by its
    token's hash)."""

    def __init__(self, directory: Path) -> None:
        """Namespaces kept under ``directory`` (made, root only, when first needed)."""
        self._directory = directory

    def join(self, token: str, container_id: str) -> JobNamespaces:
        """The namespaces and ``/dev/shm`` of the job whose launch token is ``token``, made
        if none of its containers on this machine has them; ``container_id`` is marked as
        in them until :meth:`leave`."""
        job = self._directory / hashlib.sha256(token.encode()).hexdigest()[:32]
        with self._locked():
            pid = _live_holder(job)
            if pid is None:
                unmount(str(job / SHM_DIR))  # a holder gone with its record (an agent killed)
                shutil.rmtree(job, ignore_errors=True)
                (job / USERS_DIR).mkdir(parents=True, mode=0o700)
                _mount_shm(job / SHM_DIR)
                pid = _start_holder()
                (job / HOLDER_FILE).write_text(f"{pid} {_start_time(pid)}\n")
            (job / USERS_DIR / container_id).touch()
        return JobNamespaces(f"/proc/{pid}/ns", str(job / SHM_DIR))

    def leave(self, container_id: str) -> None:
        """``container_id`` is out of its job's namespaces; the last container out ends the
        holder and its folder. Nothing when it joined none."""
        if not self._directory.is_dir():  # no job of this machine's agents ever joined
            return
        with self._locked():
            for mark in self._directory.glob(f"*/{USERS_DIR}/{container_id}"):
                mark.unlink()
                job = mark.parent.parent
                if not any((job / USERS_DIR).iterdir()):
                    pid = _live_holder(job)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                    unmount(str(job / SHM_DIR))
                    shutil.rmtree(job, ignore_errors=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The machine's agents one at a time (an flock on the folder's lock file)."""
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self._directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _mount_shm(folder: Path) -> None:
    """The job's ``/dev/shm``: a tmpfs of its own on ``folder`` (as each container's own
    was: its pages charged to the memory cgroup of the container that writes them, none
    on the disk or in ``/run``'s tmpfs), writable by any uid."""
    folder.mkdir()
    try:
        mount_tmpfs(str(folder), "mode=1777")
    except SysError as exc:
        raise SharedNamespacesError(f"could not make a job's /dev/shm: {exc}") from None


def _start_holder() -> int:
    """pid 1 of new IPC and PID namespaces, left running; its pid (on the host) once in."""
    unshare = subprocess.Popen(
        ["unshare", "--ipc", "--pid", "--fork", "--", sys.executable, "-c", _REAPER],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},  # none of the agent's
        start_new_session=True)  # not in the agent's process group: it outlives a job
    assert unshare.stdout is not None and unshare.stderr is not None
    with unshare.stdout, unshare.stderr:
        if unshare.stdout.readline() != b"in\n":
            problem = unshare.stderr.read().decode(errors="replace").strip()
            unshare.wait()
            raise SharedNamespacesError(f"could not make a job's namespaces: {problem}")
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    return int(children[0])  # unshare waits for it, and ends with it


def _live_holder(job: Path) -> int | None:
    """The pid of ``job``'s holder while that process (same start time) still runs."""
    try:
        pid_text, started = (job / HOLDER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == started else None


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot; ``""`` if it is gone): with
    its pid, what names one process, not a later one given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]
