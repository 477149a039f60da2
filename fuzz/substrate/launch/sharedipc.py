"""One IPC namespace for a multinode job's containers on one machine: shared memory for MPI.

The local provider's nodes are agents on one machine. The ranks of an MPI job on two
of them are in two containers, each with its own network and IPC namespace, so Open
MPI talks TCP over the job network between them: tens of µs a message where one
machine's shared memory takes under one. UCX (Open MPI's ``pml ucx``) moves messages
through shared memory between two processes when they booted the same kernel (its
system id is the boot id) and are in the same IPC namespace: its shared-memory
transports' reachability check compares the IPC namespaces (``uct_sm_iface_is_reachable``
in UCX's ``src/uct/sm/base/sm_iface.c``), whatever their PID, mount or network
namespaces. So the agents of one machine (those that share a ``--share-cpus-with``
directory) put the containers of one job, there, in one IPC namespace of the job's
own (:class:`SharedIpc`), and give them UCX's settings (:data:`UCX_ENVIRONMENT`).

The namespace is kept by a holder process (``unshare --ipc`` then ``sleep``), which
any agent of the machine can name (``/proc/PID/ns/ipc``) in its container's runtime
config, whatever mount namespace its container monitor is in (a bind-mounted nsfs
file would reach another monitor's namespace only through mount propagation). It is
found by the hash of the job's launch token, a secret that only the job's own
containers' requests carry: a container of another job (another tenant's or the
same user's) never joins it. Each container that joins leaves a mark
(``users/CONTAINER``); the last one to leave ends the holder. The namespace itself
lives on while a container is in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fuzz.errors import FuzzError

HOLDER_FILE = "holder"
USERS_DIR = "users"
LOCK_FILE = ".lock"
UCX_ENVIRONMENT = (
    # Open MPI 4.1 takes pml ucx only over the network devices it lists by default
    # (InfiniBand and the like); "any": over shared memory and TCP too
    "OMPI_MCA_pml_ucx_tls=any",
    "OMPI_MCA_pml_ucx_devices=any",
    # SysV shared memory needs the one IPC namespace only; posix (its peers' segments
    # through /proc/PID/fd) and cma (process_vm_readv) need one PID namespace, which
    # the containers do not share
    "UCX_TLS=self,sysv,tcp",
)
"""What a container in a shared IPC namespace gets in its environment (the job's own
environment comes after, so a user's ``UCX_TLS`` wins)."""


class SharedIpcError(FuzzError):
    """The job's IPC namespace could not be made or joined."""


class SharedIpc:
    """The IPC namespaces of the multinode jobs on this machine, under ``directory``
    (shared by the machine's agents; one folder per job, named by its token's hash)."""

    def __init__(self, directory: Path) -> None:
        """Namespaces kept under ``directory`` (made, root only, when first needed)."""
        self._directory = directory

    def join(self, token: str, container_id: str) -> str:
        """The path (``/proc/PID/ns/ipc``) of the IPC namespace of the job whose launch
        token is ``token``, made if none of its containers on this machine has one;
        ``container_id`` is marked as in it until :meth:`leave`."""
        job = self._directory / hashlib.sha256(token.encode()).hexdigest()[:32]
        with self._locked():
            pid = _live_holder(job)
            if pid is None:
                shutil.rmtree(job, ignore_errors=True)
                (job / USERS_DIR).mkdir(parents=True, mode=0o700)
                pid = _start_holder()
                (job / HOLDER_FILE).write_text(f"{pid} {_start_time(pid)}\n")
            (job / USERS_DIR / container_id).touch()
        return f"/proc/{pid}/ns/ipc"

    def leave(self, container_id: str) -> None:
        """``container_id`` is out of its job's namespace; the last container out ends the
        holder and its folder. Nothing when it joined none."""
        with self._locked():
            for mark in self._directory.glob(f"*/{USERS_DIR}/{container_id}"):
                mark.unlink()
                job = mark.parent.parent
                if not any((job / USERS_DIR).iterdir()):
                    pid = _live_holder(job)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
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


def _start_holder() -> int:
    """A new process in an IPC namespace of its own, left running; its pid once it is in."""
    holder = subprocess.Popen(
        ["unshare", "--ipc", "--", "sh", "-c", "echo in && exec sleep infinity"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)  # not in the agent's process group: it outlives a job
    assert holder.stdout is not None and holder.stderr is not None
    with holder.stdout, holder.stderr:
        if holder.stdout.readline() != b"in\n":
            problem = holder.stderr.read().decode(errors="replace").strip()
            holder.wait()
            raise SharedIpcError(f"could not make a job's IPC namespace: {problem}")
    return holder.pid


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
