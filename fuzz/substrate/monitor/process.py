"""The container monitor process: one per agent state dir, outliving the agent.

Started by the first :class:`~fuzz.substrate.runtime.containers.ContainerManager` call
that needs it (:mod:`fuzz.substrate.runtime.monitor_client`) as ``python -S -c`` running
:func:`main` in a new session, it forks once (so it is nobody's child and agent
restarts never touch it), then:

1. takes ``monitor.lock`` (an exclusive ``flock`` held for its whole life, with
   its pid in it); when another monitor holds it, it says ``busy`` and exits,
   so there are never two;
2. becomes a child subreaper (container inits become its children when runc
   exits, so it gets their real exit status) and enters a mount namespace of its
   own (:func:`~fuzz.substrate.monitor.syscalls.private_mount_namespace`) for the
   containers' overlay roots and a small tmpfs on ``monitor.run`` for runc's
   pid files (runc writes them with O_SYNC) and the copies of the host's mounts
   that jobs bind (:mod:`~fuzz.substrate.monitor.hostview`);
3. settles whatever a dead predecessor left (:meth:`Monitor.sweep
   <fuzz.substrate.monitor.server.Monitor.sweep>`) and makes a spare container
   directory for the first start; unless jobs use the host network, sets up
   the node's job bridge and firewall and starts making network namespaces
   (:mod:`fuzz.substrate.monitor.netns`), all undone when it stops;
4. listens on ``monitor.sock`` (mode 0600, peers checked with ``SO_PEERCRED``),
   says ``ready`` on the descriptor given with ``--ready-fd``, and serves until a
   ``shutdown`` request or SIGTERM has stopped every job.

It reports through ``logging`` (to ``monitor.log``, in :data:`LOG_FORMAT`), never print.
Its imports are the standard library's cheap modules and its own package
(:mod:`fuzz.substrate.monitor`), with :mod:`fuzz.fsutil`; pyroute2 only in the job
network's own thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sys

from fuzz.substrate.monitor.files import (
    CONTAINERS_DIR,
    MONITOR_LOCK,
    MONITOR_RUN_DIR,
    socket_address,
)
from fuzz.substrate.monitor.hostview import HostView
from fuzz.substrate.monitor.jobnet import AUTO, JobNetwork
from fuzz.substrate.monitor.server import Monitor
from fuzz.substrate.monitor.syscalls import (
    become_subreaper,
    mount_tmpfs,
    private_mount_namespace,
    unmount,
)

READY = b"ready\n"
BUSY = b"busy\n"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
"""One line per record in ``monitor.log``, with the monitor's pid (a new one per restart)."""


def _parse(argv: list[str]) -> tuple[str, str, int, JobNetwork]:
    state_dir: str | None = None
    runc = "runc"
    ready_fd = -1
    network = JobNetwork.parse(AUTO)
    items = iter(argv)
    for item in items:
        if item == "--runc":
            runc = next(items, runc)
        elif item == "--network":
            network = JobNetwork.from_argument(next(items, AUTO))
        elif item == "--ready-fd":
            ready_fd = int(next(items, "-1"))
        elif state_dir is None:
            state_dir = item
        else:
            raise SystemExit(f"unexpected argument {item!r}")
    if state_dir is None:
        raise SystemExit("usage: python -m fuzz.substrate.monitor.process STATE_DIR [--runc PATH]")
    return os.path.abspath(state_dir), runc, ready_fd, network


def _say(fd: int, message: bytes) -> None:
    """Tell the starter how the start went, and let go of its pipe."""
    if fd >= 0:
        try:
            os.write(fd, message)
        finally:
            os.close(fd)


def _listen(state_dir: str) -> socket.socket:
    """Bind ``monitor.sock`` afresh (mode 0600) and listen on it."""
    dir_fd = os.open(state_dir, os.O_PATH | os.O_CLOEXEC)
    try:
        address = socket_address(state_dir, dir_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(address)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        return listener
    finally:
        os.close(dir_fd)


def _unlisten(state_dir: str, listener: socket.socket) -> None:
    """Close the socket and remove its file (still under the lock: nobody rebinds it)."""
    listener.close()
    dir_fd = os.open(state_dir, os.O_PATH | os.O_CLOEXEC)
    try:
        os.unlink(socket_address(state_dir, dir_fd))
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def _take_lock(state_dir: str) -> int | None:
    """Hold ``monitor.lock`` with our pid in it; None when another monitor holds it."""
    fd = os.open(
        os.path.join(state_dir, MONITOR_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(argv: list[str] | None = None) -> int:
    """Entry point: detach, take the lock, sweep, serve; see the module docstring."""
    state_dir, runc, ready_fd, network = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    if ready_fd >= 0:
        os.set_inheritable(ready_fd, False)  # runc and the jobs must not hold it
    if os.fork() != 0:  # the starter reaps this parent at once; the monitor is orphaned
        os._exit(0)
    lock_fd = _take_lock(state_dir)
    if lock_fd is None:
        _say(ready_fd, BUSY)
        return 0
    os.makedirs(os.path.join(state_dir, CONTAINERS_DIR), exist_ok=True)
    become_subreaper()
    host_ns, own_ns = private_mount_namespace()
    run_dir = os.path.join(state_dir, MONITOR_RUN_DIR)
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    mount_tmpfs(run_dir, "mode=0700,size=4m")
    host_view = HostView(host_ns, own_ns, os.path.join(run_dir, "binds"), state_dir)
    monitor = Monitor(state_dir, runc, run_dir, network, host_view)
    monitor.sweep()
    monitor.start_network()
    listener = _listen(state_dir)
    # Only now: the spares' thread makes directories, which _listen's umask must not shape.
    monitor.replenish()
    _say(ready_fd, READY)
    monitor.serve(listener)
    _unlisten(state_dir, listener)
    unmount(run_dir)
    os.ftruncate(lock_fd, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
