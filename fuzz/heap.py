"""glibc heap settings for the processes that move port-forward data in 1 MiB buffers.

glibc gives the free memory at the top of a heap back to the kernel once it
exceeds its trim threshold, which its dynamic mmap threshold sets to twice the
largest mapped chunk freed so far: about 2 MiB after the first 1 MiB buffer. A
tunnel keeps a few 1 MiB chunks alive at once (the bytes gRPC hands Python, the
frames Python hands gRPC) and frees them together, so the heap shrinks and
grows again all the time, and every page of every chunk is faulted in anew: on
the 2-core development machine 30,000-47,000 page faults per 200 MiB in the
CLI, 28,000-33,000 in the orchestrator, and a tunnel 10-20% slower
(``bench/port_forward.py``). So the orchestrator, the node agent and the CLI's
port-forward keep blocks up to 4 MiB in the heap and at most 16 MiB free at the
top of each arena before giving memory back (a few thousand faults remain).

The same thresholds keep up to 16 MiB free in each thread's arena: after a burst
of large requests handled at once (six 1 MiB Fuzzfiles refused), the server
would hold tens of MB it no longer uses; :func:`give_back_free_memory` returns
them at once.

Python has no binding for ``mallopt(3)`` or ``malloc_trim(3)``, hence ctypes; on a
C library without them (or that ignores them, as musl does) nothing changes.
"""

from __future__ import annotations

import ctypes

# mallopt(3) parameters (<malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 2**20  # above the tunnel's 1 MiB frames
TRIM_THRESHOLD_BYTES = 16 * 2**20


def keep_large_buffers_in_heap() -> bool:
    """Set the thresholds above for this process; whether the C library took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def give_back_free_memory() -> None:
    """Return the free memory of every malloc arena to the kernel now (``malloc_trim``)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
