"""The agent's state directory: its files, its lock, and how others read them.

The agent (:mod:`fuzz.substrate.server`) writes these files and whoever manages
agents (the ``local`` provider) reads them; both sides use this module, which
imports neither gRPC nor the generated stubs.

``agent.lock``
    exclusively ``flock``-ed for the agent's whole life and holding its pid; a
    second agent on the same dir refuses to start, and anyone can tell a live agent
    from a dead one with a non-blocking lock attempt (:func:`lock_held`).
``agent.json``
    written atomically once the server answers (pid, endpoint, started_at,
    version, node_id); removed on a clean stop.
``node-id``
    the node's stable identity, made on the first start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fuzz.errors import FuzzError

LOCK_FILE = "agent.lock"
INFO_FILE = "agent.json"
NODE_ID_FILE = "node-id"
LOCK_WAIT = 0.5  # rides over another process's momentary probe of the lock


class StateDirInUseError(FuzzError):
    """Another agent holds the state directory's lock."""


def write_json_atomic(path: Path, data: Mapping[str, Any], durable: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one.

    ``durable`` also flushes it to disk before the rename (about 1 ms here): needed
    where a node crash must not lose the write; bookkeeping that only matters while
    the node's processes live (which a node crash ends anyway) can skip it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def acquire_lock(
    state_dir: Path, wait: float = LOCK_WAIT, lock_file: str = LOCK_FILE, owner: str = "agent"
) -> int:
    """Lock ``state_dir/lock_file`` exclusively, write our pid into it, return its fd.

    Retries for ``wait`` seconds (a probe by :func:`lock_held` holds the lock for
    an instant), then raises StateDirInUseError naming the holder (an ``owner``)
    and its pid.
    """
    fd = os.open(state_dir / lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError as exc:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise StateDirInUseError(
                f"another {owner} ({who}) is already running on state dir {state_dir}"
            ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    """Clear the pid and release the lock taken by :func:`acquire_lock`."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def flock_held(path: Path | str) -> bool:
    """True while some process holds an exclusive ``flock`` on ``path``.

    Probes with a non-blocking shared ``flock`` on a fresh descriptor, which fails
    exactly while the holder keeps its exclusive lock; the kernel drops that lock
    when the holder dies, however it dies.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also releases the probe's own lock
    return False


def lock_held(state_dir: Path) -> bool:
    """True while a live agent holds ``state_dir/agent.lock``."""
    return flock_held(state_dir / LOCK_FILE)


def lock_pid(state_dir: Path) -> int | None:
    """The pid written into ``agent.lock`` by its holder (None when there is none)."""
    try:
        text = (state_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_node_id(state_dir: Path) -> str:
    """The node's stable id, kept in ``state_dir/node-id`` (made on first use)."""
    path = state_dir / NODE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    new = uuid.uuid4().hex
    tmp = path.with_name(f".{NODE_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by its owner only (mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
