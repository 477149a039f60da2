"""Send a signal to one thread of a process, as the kernel may deliver a process's signal.

Python has no ``tgkill``; ctypes calls the system call directly (x86-64 and arm64
numbers), so tests can reproduce a SIGTERM that lands on a thread other than the
main one (e.g. one of gRPC's C threads).
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

TGKILL = {"x86_64": 234, "aarch64": 131}


def a_thread_other_than_main(pid: int) -> int:
    """The id of a thread of ``pid`` that is not its main thread."""
    others = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    assert others, f"process {pid} has no thread but its main one"
    return others[0]


def signal_thread(pid: int, tid: int, signum: int) -> None:
    """Send ``signum`` to thread ``tid`` of process ``pid`` (tgkill)."""
    number = TGKILL[platform.machine()]
    if ctypes.CDLL(None, use_errno=True).syscall(number, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}: {os.strerror(ctypes.get_errno())}")


def thread_name(pid: int, tid: int) -> str:
    """The name of thread ``tid`` of ``pid`` (for messages)."""
    return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
