"""The default seccomp profile of every job container: an allow-list of syscalls.

In the spirit of Docker's default profile (written here from the syscall tables,
not copied): every syscall not listed fails with EPERM, so a job gets what a
normal program (a shell, Python, an MPI rank, a compiler) needs and none of the
kernel's rarely used, historically buggy or host-wide surfaces. The capabilities a
job lacks already stop many of these; the filter is the second wall, and it also
closes what needs no capability at all (user namespaces, ``userfaultfd``,
``io_uring``, ``keyctl``).

Denied, and why:

- ``mount``, ``umount2``, ``pivot_root`` and the new mount API (``fsopen``,
  ``fsconfig``, ``fsmount``, ``fspick``, ``move_mount``, ``open_tree``,
  ``mount_setattr``): a job's file system is set up by the agent, never by the job.
- ``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*`` flag, and ``clone3``
  (its flags are in memory, where a filter cannot look; it answers ENOSYS, so glibc
  falls back to ``clone``, as under Docker): new namespaces, user namespaces above
  all, are the door to kernel code paths that assume root (most container
  breakouts of the last years went through one).
- ``keyctl``, ``add_key``, ``request_key``: the kernel keyring is not namespaced.
- ``ptrace``, ``kcmp``, ``pidfd_getfd``, ``process_madvise``: no reaching into other
  processes (debuggers and ``strace`` do not work inside a job).
  ``process_vm_readv``/``process_vm_writev`` stay allowed: MPI libraries copy
  between ranks of one job with them (Open MPI's and MPICH's "CMA"), and the
  kernel allows them only into the caller's own processes, inside the job's
  process namespace.
- ``bpf``, ``perf_event_open``: kernel programs and performance counters (host-wide
  information; a long list of CVEs). Profiling with ``perf`` needs a privileged pool.
- ``userfaultfd``: the usual tool for winning kernel races.
- ``io_uring_setup``, ``io_uring_enter``, ``io_uring_register``: a large, young
  kernel surface whose operations bypass this filter; they answer ENOSYS, so
  libraries fall back to ordinary system calls.
- ``kexec_load``, ``kexec_file_load``, ``reboot``, ``swapon``, ``swapoff``,
  ``init_module``, ``finit_module``, ``delete_module``, ``acct``, ``quotactl``,
  ``syslog``, ``vhangup``, ``iopl``, ``ioperm``, ``settimeofday``,
  ``clock_settime``, ``clock_adjtime``, ``adjtimex``, ``sethostname``,
  ``setdomainname``, ``lookup_dcookie``, ``fanotify_init``, ``fanotify_mark``:
  host-wide administration.
- ``open_by_handle_at`` and ``name_to_handle_at``: file handles open files by
  number, past every bind mount (the "shocker" escape).
- ``personality`` except the harmless personas (Linux, 32-bit, uname26) and the
  query: no turning address space randomisation off.

Kept although Docker's profile drops them without a capability: ``mbind``,
``set_mempolicy``, ``get_mempolicy``, ``migrate_pages`` and ``move_pages``: NUMA
placement is what HPC codes (hwloc, OpenMP runtimes, MPI) do; the kernel still
refuses to move another user's pages. Syscalls newer than this list (and than
Debian's libseccomp) answer ENOSYS rather than EPERM (runc does this), so a
library probing for them falls back.

Architectures: the node's own, x86_64 or aarch64, and no other (as Docker does;
32-bit and x32 entry points are refused: HPC codes are 64-bit, and compat syscalls
are another kernel surface). A filter with foreign architectures would only make
every container start slower (runc compiles the filter at each start; a few
milliseconds per architecture on a small machine). One list serves both: runc
skips names an architecture does not have.
"""

from __future__ import annotations

import os
from typing import Any

EPERM = 1
ENOSYS = 38
ARCHITECTURES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
"""libseccomp's name of each architecture fuzz runs on, by ``uname -m``."""

# clone() flags that make new namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
# NEWUSER, NEWPID, NEWNET): a clone with any of them is refused.
CLONE_NAMESPACE_FLAGS = 0x7E020000
# personality(2) values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query.
PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

FILES = (
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
    "dup", "dup2", "dup3", "lseek", "fcntl", "flock", "fsync", "fdatasync", "sync",
    "syncfs", "sync_file_range", "truncate", "ftruncate", "fallocate", "fadvise64",
    "readahead", "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "ioctl",
    "pipe", "pipe2", "memfd_create", "io_setup", "io_destroy", "io_submit", "io_cancel",
    "io_getevents", "io_pgetevents",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access",
    "faccessat", "faccessat2", "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "unlink", "unlinkat", "readlink", "readlinkat", "chmod",
    "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown", "umask", "utime",
    "utimes", "utimensat", "futimesat", "mknod", "mknodat", "chroot",
    "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
    "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
    "fremovexattr", "inotify_init", "inotify_init1", "inotify_add_watch",
    "inotify_rm_watch", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self",
)  # fmt: skip
MEMORY = (
    "brk", "mmap", "munmap", "mremap", "mprotect", "pkey_mprotect", "pkey_alloc",
    "pkey_free", "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
    "mincore", "msync", "remap_file_pages", "membarrier", "mbind", "get_mempolicy",
    "set_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages",
)  # fmt: skip
PROCESSES = (
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "set_tid_address", "set_robust_list", "get_robust_list", "futex", "futex_waitv",
    "rseq", "arch_prctl", "prctl", "seccomp", "getrlimit", "setrlimit", "prlimit64",
    "getrusage", "times", "sysinfo", "uname", "capget", "capset", "kill", "tkill",
    "tgkill", "pidfd_open", "pidfd_send_signal", "process_vm_readv", "process_vm_writev",
    "getpriority", "setpriority", "ioprio_get", "ioprio_set", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr", "sched_setattr",
    "getcpu", "restart_syscall", "getrandom",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid",
)  # fmt: skip
SIGNALS_AND_TIME = (
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "signalfd",
    "signalfd4", "pause", "alarm",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday",
    "time", "timer_create", "timer_delete", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timerfd_create", "timerfd_settime", "timerfd_gettime",
    "getitimer", "setitimer",
)  # fmt: skip
EVENTS_NETWORK_IPC = (
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
    "getsockname", "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
    "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
)  # fmt: skip
ALLOWED = FILES + MEMORY + PROCESSES + SIGNALS_AND_TIME + EVENTS_NETWORK_IPC
"""Every syscall a job may make without conditions."""

NOT_SUPPORTED = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")
"""Answer ENOSYS, so that libraries fall back (glibc to clone, io_uring users to plain I/O)."""


def default_profile(machine: str | None = None) -> dict[str, Any]:
    """The ``linux.seccomp`` section of a job's OCI config on a ``machine`` node
    (default: this one). Another architecture gets libseccomp's default: its own only."""
    machine = machine or os.uname().machine
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": [ARCHITECTURES[machine]] if machine in ARCHITECTURES else [],
        "syscalls": [
            {"names": list(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            *({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]}
              for persona in PERSONAS),
            {"names": list(NOT_SUPPORTED), "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }
