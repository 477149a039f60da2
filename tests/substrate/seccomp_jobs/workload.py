"""Run inside a job container: what Python and MPI-style programs do, under the profile.

Threads, fork and spawn process pools, POSIX semaphores, subprocesses (glibc's
posix_spawn tries clone3 first), TCP and Unix sockets, asyncio (epoll), shared
memory between processes, a single copy from another rank's memory
(process_vm_readv, as MPI's CMA does), CPU affinity and NUMA policy, files. Prints
one line per step.
"""

import asyncio
import ctypes
import mmap
import multiprocessing
import os
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

GET_MEMPOLICY = {"x86_64": 239, "aarch64": 236}[os.uname().machine]


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def square(number: int) -> int:
    return number * number


def copy_from_a_rank(libc: ctypes.CDLL) -> str:
    """What process_vm_readv reads from a child's buffer."""
    data = ctypes.create_string_buffer(b"rank-1 data")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writer, b"x")
        time.sleep(30)
        os._exit(0)
    os.read(reader, 1)
    got = ctypes.create_string_buffer(len(data.value))
    local = IoVec(ctypes.addressof(got), len(got))
    remote = IoVec(ctypes.addressof(data), len(got))
    copied = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return got.value.decode() if copied > 0 else os.strerror(ctypes.get_errno())


async def tick() -> str:
    await asyncio.sleep(0.01)
    return "ok"


def main() -> None:
    with ThreadPoolExecutor(4) as threads:
        print("threads", sum(threads.map(square, range(10))))
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            print(f"{method}-pool", sum(pool.map(square, range(10))))
    with multiprocessing.Semaphore(1):
        print("semaphore ok")
    echoed = subprocess.run(["/bin/echo", "hi"], capture_output=True, text=True, check=True)
    print("subprocess", echoed.stdout.strip())
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        client.sendall(b"ping")
        print("tcp", accepted.recv(4).decode())
        accepted.close()
    left, right = socket.socketpair()
    left.sendall(b"unix")
    print("socketpair", right.recv(4).decode())
    print("asyncio", asyncio.run(tick()))
    shared = mmap.mmap(-1, 4096)
    pid = os.fork()
    if pid == 0:
        shared[:5] = b"child"
        os._exit(0)
    os.waitpid(pid, 0)
    print("shared-memory", shared[:5].decode())
    libc = ctypes.CDLL(None, use_errno=True)
    print("process_vm_readv", copy_from_a_rank(libc))
    os.sched_setaffinity(0, os.sched_getaffinity(0))
    mode = ctypes.c_int(-1)
    result = libc.syscall(GET_MEMPOLICY, ctypes.byref(mode), None, 0, None, 0)
    print("get_mempolicy", result, mode.value)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "f")
        with open(path, "w") as file:
            file.write("file")
        os.chmod(path, 0o600)
        os.rename(path, path + "2")
        with open(path + "2") as file:
            print("files", file.read(), len(os.urandom(8)))


if __name__ == "__main__":
    main()
