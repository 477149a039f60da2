"""Connecting to a TCP port inside a container's network namespace.

Each job has a network namespace of its own (:mod:`fuzz.substrate.monitor.netns`),
so the connection is made from a short-lived thread that has entered it with
``setns(2)`` (a plain one only for jobs of a ``network: host`` pool, which share
the node's namespace, loopback included): a socket stays in the namespace it
was made in, and ``setns`` moves only the calling thread, so the agent's other
threads are not affected. (Python 3.11's ``os`` has no ``setns``, hence ``ctypes``.)
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from fuzz.errors import FuzzError

CLONE_NEWNET = 0x40000000
LOOPBACK = "127.0.0.1"


class PortUnreachableError(FuzzError):
    """Nothing accepts connections on the port inside the container."""


def _netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def shares_our_netns(pid: int) -> bool:
    """Whether process ``pid`` is in this process's network namespace."""
    theirs, ours = os.stat(_netns_path(pid)), os.stat(_netns_path(os.getpid()))
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.settimeout(None)
    return sock


def _connect_inside(pid: int, port: int, timeout: float) -> socket.socket:
    """Connect from a thread that entered ``pid``'s network namespace (and then ends)."""
    outcome: list[socket.socket | OSError] = []

    def enter_and_connect() -> None:
        try:
            fd = os.open(_netns_path(pid), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            outcome.append(_connect(port, timeout))
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=enter_and_connect, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, OSError):
        raise result
    return result


def connect_in_netns(pid: int, port: int, timeout: float, what: str) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` as process ``pid`` sees it (blocking mode).

    ``what`` names the container in errors: PortUnreachableError when nothing
    accepts there (refused, timed out) or the process is gone.
    """
    try:
        if shares_our_netns(pid):
            return _connect(port, timeout)
        return _connect_inside(pid, port, timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise PortUnreachableError(f"cannot connect to port {port} in {what}: {reason}") from exc
