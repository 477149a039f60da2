"""Run inside a job container: try the syscalls the default seccomp profile refuses.

Prints one line per call: its name and ``ok`` or the errno's name. Each of these
succeeds in a container without the profile (as a non-root user, with no
capabilities), so each line says what the profile changed.
"""

import ctypes
import errno
import os

NUMBERS = {
    "x86_64": {"clone": 56, "keyctl": 250, "userfaultfd": 323, "io_uring_setup": 425,
               "ptrace": 101, "personality": 135, "clone3": 435, "exit": 60},
    "aarch64": {"clone": 220, "keyctl": 219, "userfaultfd": 282, "io_uring_setup": 425,
                "ptrace": 117, "personality": 92, "clone3": 435, "exit": 93},
}[os.uname().machine]
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def call(name: str, *args: int) -> tuple[int, int]:
    """The raw syscall ``name``: its result and errno."""
    ctypes.set_errno(0)
    result = libc.syscall(NUMBERS[name], *(ctypes.c_long(arg) for arg in args))
    return result, ctypes.get_errno()


def report(name: str, outcome: tuple[int, int]) -> None:
    result, number = outcome
    print(name, "ok" if result >= 0 else errno.errorcode[number], flush=True)


child = call("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
if child[0] == 0:  # the child, in a user namespace of its own
    libc.syscall(NUMBERS["exit"], 0)
if child[0] > 0:
    os.waitpid(child[0], 0)
report("clone-newuser", child)
report("keyctl-join-session", call("keyctl", 1, 0))
report("userfaultfd", call("userfaultfd", 1))  # UFFD_USER_MODE_ONLY: no privilege needed
params = ctypes.create_string_buffer(120)
report("io_uring_setup", call("io_uring_setup", 1, ctypes.addressof(params)))
report("personality-no-aslr", call("personality", 0x0040000))  # ADDR_NO_RANDOMIZE
report("ptrace-traceme", call("ptrace", 0, 0, 0, 0))
