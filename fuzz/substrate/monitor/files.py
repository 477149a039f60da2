"""Names of the files the container monitor and the manager share, and how they are written.

Imported by the monitor process (:mod:`fuzz.substrate.monitor.process`), so it imports
only cheap standard modules (and :mod:`fuzz.fsutil`, which does too): no typing, no
pathlib, nothing from the agent.

Under the agent's state dir:

``monitor.lock``  ``flock``-ed by the live monitor for its whole life; holds its pid
``monitor.sock``  the monitor's unix socket (JSON lines, one request per connection)
``monitor.log``   the monitor's stdout and stderr: its log records, and any traceback
``monitor.run/``  where the monitor mounts a small tmpfs of its own (runc's pid files, logs)
``containers/<id>/``  one directory per container (see :mod:`fuzz.substrate.runtime.containers`)
"""

from __future__ import annotations

import json
import os

from fuzz.fsutil import write_atomic

TYPE_CHECKING = False  # typing itself is too slow to import in the monitor
if TYPE_CHECKING:
    from typing import Any

# In the state dir.
CONTAINERS_DIR = "containers"
MONITOR_LOCK = "monitor.lock"
MONITOR_SOCKET = "monitor.sock"
MONITOR_LOG = "monitor.log"
# A tmpfs mounted there in the monitor's mount namespace only, for runc's pid
# files and logs: runc writes them with O_SYNC, which costs milliseconds on a disk.
MONITOR_RUN_DIR = "monitor.run"

# In a container's directory, which is also its OCI bundle.
CONFIG_FILE = "config.json"
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
CANCEL_FILE = "cancel"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
ROOTFS_DIR = "rootfs"  # the overlay's mount point (merged dir)
UPPER_DIR = "upper"  # the overlay's upper dir: the job's changes to its root
WORK_DIR = "work"  # the overlay's work dir
NETNS_FILE = "netns"  # the job's network namespace, bind-mounted (see monitor.netns)
FILES_DIR = "files"  # the files placed in the container, 0, 1, ... (see monitor.placed)
# A spare container directory, made in advance: creating files costs far more
# than opening existing ones, so a start only renames it into place.
SPARE_PREFIX = ".spare-"
SPARE_DIRS = (ROOTFS_DIR, UPPER_DIR, WORK_DIR)
STATUS_TEMPS = (".status.1.tmp", ".status.2.tmp")  # for the writes a client waits for
SPARE_FILES = (CONFIG_FILE, SPEC_FILE, STDOUT_LOG, STDERR_LOG, NETNS_FILE, *STATUS_TEMPS)

FINAL_STATES = ("exited", "failed")
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes, NUL included


def new_status(container_id: str, runc: str | None = None,
               monitor_pid: int | None = None) -> dict[str, Any]:
    """A container's ``status.json`` as it starts: the one definition of that document.

    The monitor fills it in as the job runs (``state``: starting, running, then
    exited or failed); :class:`fuzz.substrate.containers.ContainerStatus` is the
    agent's typed view of it. ``runc``: the binary that runs the container;
    ``monitor_pid``: the monitor watching it (None: none is).
    """
    return {
        "id": container_id,
        "state": "starting",
        "exit_code": None,
        "signal": None,
        "oom_killed": False,
        "timed_out": False,
        "cancelled": False,
        "started_at": None,
        "finished_at": None,
        "peak_memory_bytes": None,
        "error": None,
        "pid": None,
        "address": None,
        "monitor_pid": monitor_pid,
        "runc": runc,
    }


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


def write_json(path: str, data: dict[str, Any], tmp: str | None = None) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one.

    Through the temporary file ``tmp`` (one made in advance is faster to write).
    Not fsync-ed: after a crash of the node the old status may be back, which the
    next monitor's sweep settles like any unfinished container.
    """
    write_atomic(path, json.dumps(data).encode() + b"\n", durable=False, temp=tmp)


def socket_address(state_dir: str, dir_fd: int | None = None) -> str:
    """The address of the monitor's socket in ``state_dir``.

    A unix socket path may not exceed 107 bytes; a longer one is reached through
    ``/proc/self/fd/<dir_fd>`` (``dir_fd``: an ``O_PATH`` descriptor of the state
    dir, required then).
    """
    path = os.path.join(state_dir, MONITOR_SOCKET)
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    if dir_fd is None:
        raise ValueError(f"socket path {path} is too long and no directory fd was given")
    return f"/proc/self/fd/{dir_fd}/{MONITOR_SOCKET}"


def socket_path_too_long(state_dir: str) -> bool:
    """Whether :func:`socket_address` needs a directory fd for ``state_dir``."""
    return len(os.fsencode(os.path.join(state_dir, MONITOR_SOCKET))) > SOCKET_PATH_MAX
