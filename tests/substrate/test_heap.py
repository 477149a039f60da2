"""The heap settings of the port-forward processes: 1 MiB buffers stop costing page faults."""

from __future__ import annotations

import subprocess
import sys

# A relay thread's pattern: a few 1 MiB messages alive at once, then all freed; 50 times.
# Prints the process's minor page faults meanwhile.
LOOP = """
import resource, sys, threading
from fuzz.heap import keep_large_buffers_in_heap
if sys.argv[1] == "tuned":
    assert keep_large_buffers_in_heap()
def relay():
    for _ in range(50):
        alive = [b"x" * (1 << 20) for _ in range(4)]  # malloc, then every page written
        del alive
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
thread = threading.Thread(target=relay)
thread.start()
thread.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 200 * 256  # 200 MiB of 4 KiB pages


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True,
                          check=True, timeout=60)
    return int(done.stdout)


def test_tuned_processes_reuse_1_mib_buffers_instead_of_faulting_them_in_again() -> None:
    plain, tuned = _faults("plain"), _faults("tuned")
    assert plain > PAGES / 2, f"glibc gives freed buffers back, then faults them in: {plain}"
    assert tuned < PAGES / 20, f"tuned: {tuned} faults (plain: {plain})"
