"""The container monitor's event loop: requests on its socket, and its jobs' processes.

One thread, one ``poll`` (beside it, threads that make spare container
directories and network namespaces in advance): the listening socket, the client connections, the
pidfds of every runc and container init the jobs watch, and a wakeup pipe for
SIGTERM/SIGINT. Requests are JSON lines, one per connection, each answered with
one JSON line (then the connection is closed):

``{"op": "start", "id", "runc", "rootfs", "config", "spec", "timeout", "grace", "cgroup"}``
    make the container's directory (``{"error", "exists": true}`` when it
    exists), run the container; answered once it runs or has ended:
    ``{"status": {...}}`` (see :class:`~fuzz.substrate.monitor.job.Job`)
    With ``"prepare": true`` the container is only created (``runc create``) and
    the answer comes once it is, with the status still ``starting``; with
    ``"sandbox": KEY`` (a task array's task) it runs as a process of that key's task
    sandbox (:mod:`~fuzz.substrate.monitor.sandbox`), on cgroup v1 hosts;
``{"op": "go", "id"}``
    start a prepared container (``runc start``); answered as ``start`` is
``{"op": "wait", "id", "cleaned": bool}``
    answered once the container has ended (with ``cleaned``: once its cleanup is
    done too): ``{"status": {...}}`` (``null`` when there is no such container)
``{"op": "cancel", "id"}``
    re-read the container's ``cancel`` file and act on it: ``{"ok": true}``
``{"op": "check", "id"}``
    the status, after settling a container that no monitor watches: ``{"status": ...}``
``{"op": "shutdown", "grace"}``
    stop every job (SIGTERM, its grace but at most ``grace`` seconds when given,
    SIGKILL), clean up, answer, exit

Errors are answered as ``{"error": "one line"}`` (with ``"retry": true`` from a
monitor that is shutting down: ask its successor). Only monitors make container
directories, so an unfinished container that is not this monitor's belonged to
one that died: all of those are settled at startup (:meth:`Monitor.sweep`), and
any found later when first asked about
(:func:`~fuzz.substrate.monitor.job.settle`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import struct
import time

from fuzz.fsutil import read_json
from fuzz.substrate.monitor import firewall
from fuzz.substrate.monitor.cgroup import cgroup_mounts
from fuzz.substrate.monitor.files import (
    CONTAINERS_DIR,
    FINAL_STATES,
    NETNS_FILE,
    SPARE_PREFIX,
    STATUS_FILE,
    one_line,
)
from fuzz.substrate.monitor.job import Job, settle
from fuzz.substrate.monitor.jobnet import JobNetwork
from fuzz.substrate.monitor.netns import NetnsError, NetnsPool
from fuzz.substrate.monitor.runc import Runc
from fuzz.substrate.monitor.sandbox import PREFIX as SANDBOX_PREFIX
from fuzz.substrate.monitor.sandbox import (
    Sandbox,
    SandboxTask,
    parse_config,
    sandbox_cgroup,
    sandbox_config,
)
from fuzz.substrate.monitor.spare import Spare
from fuzz.substrate.monitor.syscalls import unmount
from fuzz.substrate.monitor.taskcgroup import SERVER_LEAF, remove_sandbox
from fuzz.substrate.monitor.taskcgroup import supported as sandboxes_supported

logger = logging.getLogger(__name__)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from fuzz.substrate.monitor.hostview import HostView
    from fuzz.substrate.monitor.spare import Premount

MAX_REQUEST = 16 * 1024 * 1024  # a start request carries the OCI config and the spec
RECV_SIZE = 256 * 1024
UCRED = struct.Struct("3i")
SANDBOX_KEY = re.compile(r"[0-9a-f]{16,64}")  # the agent's hash naming a task sandbox


class Client:
    """One connection: the request being read, then what it waits for."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap an accepted, non-blocking connection."""
        self.sock = sock
        self.buffer = b""
        self.waiting: tuple[str, str] | None = None  # (container id, "start"|"exit"|"clean")


class Monitor:
    """Runs and watches every container of one state dir; see the module docstring."""

    def __init__(self, state_dir: str, runc: str, run_dir: str, network: JobNetwork,
                 host_view: HostView) -> None:
        """Serve ``state_dir``'s containers; ``runc`` settles orphans that name none.

        ``run_dir`` is a tmpfs of the monitor's own for runc's pid files and logs;
        jobs are put on ``network`` (see :meth:`start_network`) and bind the host's
        paths through ``host_view``.
        """
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.host_view = host_view
        self.root = os.path.join(state_dir, CONTAINERS_DIR)
        self.runc = Runc(runc)
        self.cgroup_mounts = cgroup_mounts()
        self.poller = select.poll()
        self.callbacks: dict[int, Callable[[], None]] = {}
        self.jobs: dict[str, Job] = {}
        self.clients: dict[int, Client] = {}
        self.waiters: dict[str, list[Client]] = {}
        self.stopping = False
        self.shutdown_clients: list[Client] = []
        self.stop_signalled = False
        self.spare = Spare(self.root)
        self.netns = None if network.host else NetnsPool(network, state_dir)
        self.sandboxes: dict[str, Sandbox] = {}  # the live one of each key
        self.sandbox_jobs: dict[str, Sandbox] = {}  # by their container's id, until cleaned
        self.sandbox_count = 0
        self.sandboxes_supported = sandboxes_supported(self.cgroup_mounts)

    # --- the Host interface of jobs

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``fd`` is readable."""
        self.callbacks[fd] = callback
        self.poller.register(fd, select.POLLIN)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (a no-op when it is not watched)."""
        if self.callbacks.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def forget_network(self, container_id: str, address: str | None, peers: list[str]) -> None:
        """The container is gone: its address is free, its peers' rules go."""
        if self.netns is None:
            return
        self.netns.release(container_id)
        if address and peers:
            firewall.forget_peers(self.netns.subnet, self.netns.network.jobs_range, address,
                                  peers, container_id)

    def network_ended(self, job: Job) -> None:
        """``job``'s container is deleted: its namespace may serve the same tenant again."""
        if self.netns is not None:
            self.netns.recycle(job.id, job.path(NETNS_FILE), job.tenant)

    def job_changed(self, job: Job) -> None:
        """Answer the clients waiting for what ``job`` has now reached."""
        reached = {"start"}
        if job.final:
            reached.add("exit")
        sandbox = self.sandbox_jobs.get(job.id)
        if sandbox is not None:
            sandbox.container_changed()
            if job.phase == "done":  # a sandbox's directory is the monitor's to delete
                del self.sandbox_jobs[job.id]
                if self.sandboxes.get(sandbox.key) is sandbox:
                    del self.sandboxes[sandbox.key]
                shutil.rmtree(job.dir, ignore_errors=True)
                remove_sandbox(self.cgroup_mounts, sandbox.cgroup)
        if job.phase == "done":
            reached.add("clean")
            del self.jobs[job.id]
            self.forget_network(job.id, job.status.get("address"), job.peers)
        waiting = self.waiters.get(job.id, [])
        for client in [c for c in waiting if c.waiting and c.waiting[1] in reached]:
            self.reply(client, {"status": job.status})
        if job.phase == "done":
            self.waiters.pop(job.id, None)

    # --- settling what no monitor watches

    def settle(self, container_id: str) -> dict[str, Any] | None:
        """Settle a container this monitor does not run; its status (None: it is gone)."""
        return settle(os.path.join(self.root, container_id), self.runc)

    def sweep(self) -> None:
        """Settle what dead monitors left (unfinished jobs, cleanups); drop their spares."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(SPARE_PREFIX):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            elif name.startswith(SANDBOX_PREFIX):  # a dead monitor's sandbox: delete it
                self.settle(name)
                cgroup = sandbox_cgroup(os.path.join(self.root, name))
                if cgroup is not None:
                    remove_sandbox(self.cgroup_mounts, cgroup)
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            elif not name.startswith("."):
                self.settle(name)

    # --- clients

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection from our own user (or root) only."""
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        _, uid, _ = UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
        if uid not in (0, os.geteuid()):
            sock.close()
            return
        sock.setblocking(False)
        client = Client(sock)
        self.clients[sock.fileno()] = client
        self.watch(sock.fileno(), lambda: self.readable(client))
        self.readable(client)  # the request is usually there already

    def readable(self, client: Client) -> None:
        """Read a request, or notice that a waiting client has gone away."""
        try:
            data = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or client.waiting is not None:
            self.drop(client)  # gone (or talking out of turn)
            return
        client.buffer += data
        if b"\n" not in client.buffer:
            if len(client.buffer) > MAX_REQUEST:
                self.drop(client)
            return
        line = client.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            self.handle(client, request)
        except (ValueError, TypeError, KeyError) as exc:
            self.reply(client, {"error": f"bad request: {exc}"})

    def drop(self, client: Client) -> None:
        """Forget a client and close its connection."""
        fd = client.sock.fileno()
        if fd >= 0:
            self.unwatch(fd)
            self.clients.pop(fd, None)
        if client.waiting is not None:
            waiting = self.waiters.get(client.waiting[0], [])
            if client in waiting:
                waiting.remove(client)
            client.waiting = None
        client.sock.close()

    def reply(self, client: Client, answer: dict[str, Any]) -> None:
        """Send ``answer`` and close the connection (a client that cannot take it is dropped)."""
        with contextlib.suppress(OSError):
            client.sock.send(json.dumps(answer).encode() + b"\n")
        self.drop(client)

    def wait_for(self, client: Client, container_id: str, what: str) -> None:
        """Answer ``client`` once the job reaches ``what`` (start, exit or clean)."""
        client.waiting = (container_id, what)
        self.waiters.setdefault(container_id, []).append(client)

    # --- requests

    def handle(self, client: Client, request: dict[str, Any]) -> None:
        """Dispatch one request."""
        op = request.get("op")
        if op == "shutdown":
            self.shutdown_clients.append(client)
            client.waiting = ("", "shutdown")
            grace = request.get("grace")
            self.stop(float(grace) if isinstance(grace, int | float) else None)
            return
        container_id = str(request.get("id", ""))
        if not container_id or "/" in container_id or container_id.startswith("."):
            self.reply(client, {"error": f"bad container id {container_id!r}"})
        elif op == "start":
            self.start(client, container_id, request)
        elif op == "go":
            self.go(client, container_id)
        elif op == "reserve":
            self.reserve(client, container_id)
        elif op == "wait":
            self.wait(client, container_id, "clean" if request.get("cleaned") else "exit")
        elif op == "cancel":
            job = self.jobs.get(container_id)
            if job is not None:
                job.on_cancel()
            self.reply(client, {"ok": True})
        elif op == "check":
            job = self.jobs.get(container_id)
            self.reply(client, {"status": job.status if job else self.settle(container_id)})
        else:
            self.reply(client, {"error": f"unknown op {op!r}"})

    def start(self, client: Client, container_id: str, request: dict[str, Any]) -> None:
        """Make the container's directory, launch it, and answer once it runs or has ended."""
        if self.stopping:
            self.reply(client, {"error": "the container monitor is shutting down", "retry": True})
            return
        for key in ("runc", "rootfs", "config", "spec"):
            if not isinstance(request.get(key), str):
                self.reply(client, {"error": f"bad start request: no {key!r}"})
                return
        directory = os.path.join(self.root, container_id)
        if container_id in self.jobs or os.path.lexists(directory):
            self.reply(client, {"error": f"container {container_id!r} exists", "exists": True})
            return
        sandbox = request.get("sandbox")
        if isinstance(sandbox, str) and SANDBOX_KEY.fullmatch(sandbox) and self.sandboxes_supported:
            self.start_task(client, directory, request, sandbox)
            return
        placed = self.launch(client, directory, request)
        if placed is not None:
            job, premount = placed
            self.wait_for(client, container_id, "start")
            job.launch(premount)
            if job.image is not None:
                self.spare.image = job.image

    def launch(self, client: Client, directory: str, request: dict[str, Any],
               config: str | None = None) -> tuple[Job, Premount | None] | None:
        """A job for ``request`` in ``directory`` (a spare placed there, with its network,
        and what the spare has mounted), to be launched by the caller (``config``: the OCI
        config instead of the request's); None when that failed (``client`` is answered)."""
        container_id = os.path.basename(directory)
        address = None
        peers = [str(peer) for peer in request.get("peers") or ()]
        made = None
        try:
            made = self.spare.claim()
            if self.netns is not None:
                address = self.netns.take(container_id, os.path.join(made.path, NETNS_FILE),
                                          str(request.get("tenant", "")))
                if peers:
                    firewall.allow_peers(self.netns.subnet, self.netns.network.jobs_range,
                                         address, peers, container_id)
            premount = self.spare.place(made, directory)
        except (OSError, NetnsError, firewall.FirewallError) as exc:
            if made is not None:
                if address is not None:
                    unmount(os.path.join(made.path, NETNS_FILE))
                    self.forget_network(container_id, address, peers)
                self.spare.drop(made)
            where = f"make {directory}" if isinstance(exc, OSError) else "give it a network"
            self.reply(client, {"error": f"cannot {where}: {exc}"})
            return None
        job = Job(self, directory, request if config is None else {**request, "config": config},
                  self.run_dir)
        job.attach_network(address, peers)
        self.jobs[container_id] = job
        return job, premount

    def start_task(self, client: Client, directory: str, request: dict[str, Any],
                   key: str) -> None:
        """Run a task in the sandbox of ``key`` (made now if there is none that lives)."""
        try:
            config = parse_config(request["config"])
            os.mkdir(directory, 0o711)
        except (ValueError, OSError) as exc:
            self.reply(client, {"error": one_line(f"cannot start task: {exc}")})
            return
        sandbox = self.sandboxes.get(key)
        if sandbox is None or not sandbox.alive:
            sandbox = self.new_sandbox(client, directory, request, config, key)
            if sandbox is None:
                shutil.rmtree(directory, ignore_errors=True)
                return
        task = SandboxTask(self, sandbox, directory, request, self.run_dir, config)
        self.jobs[task.id] = task
        self.wait_for(client, task.id, "start")
        task.launch()

    def new_sandbox(self, client: Client, task_dir: str, request: dict[str, Any],
                    config: dict[str, Any], key: str) -> Sandbox | None:
        """Start the sandbox ``key`` for its first task (``request``, ``config``)."""
        self.sandbox_count += 1
        name = f"{SANDBOX_PREFIX}{key[:16]}-{os.getpid()}-{self.sandbox_count}"
        cgroup = f"{os.path.dirname(str(request.get('cgroup') or '/fuzz/x'))}/{name}"
        directory = os.path.join(self.root, name)
        text = json.dumps(sandbox_config(config, task_dir, directory, cgroup))
        placed = self.launch(client, directory,
                             {**request, "timeout": None, "log_limit": None,
                              "cgroup": f"{cgroup}/{SERVER_LEAF}", "prepare": False}, text)
        if placed is None:
            return None
        job, premount = placed
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sandbox = Sandbox(self, key, job, ours, cgroup)
        self.sandboxes[key] = sandbox
        self.sandbox_jobs[job.id] = sandbox
        job.passed = theirs.fileno()
        try:
            job.launch(premount)
        finally:
            theirs.close()
        if job.image is not None:
            self.spare.image = job.image
        return sandbox

    def go(self, client: Client, container_id: str) -> None:
        """Start a prepared container; answer once it runs or has ended."""
        job = self.jobs.get(container_id)
        if job is None or job.phase != "prepared" or job.killed:
            self.reply(client, {"error": f"container {container_id!r} is not prepared"})
            return
        self.wait_for(client, container_id, "start")
        job.go()

    def reserve(self, client: Client, container_id: str) -> None:
        """Answer the address ``container_id`` will have (None: jobs use the host network)."""
        if self.netns is None:
            self.reply(client, {"address": None})
            return
        try:
            self.reply(client, {"address": self.netns.reserve(container_id)})
        except NetnsError as exc:
            self.reply(client, {"error": str(exc)})

    def start_network(self) -> None:
        """Set up the job network (bridge, firewall, namespaces made in advance), if any."""
        if self.netns is not None:
            self.netns.start()

    def replenish(self) -> None:
        """Have the next spare directories made (by the spares' thread), unless stopping."""
        if not self.stopping:
            self.spare.replenish()

    def wait(self, client: Client, container_id: str, what: str) -> None:
        """Answer now if the container has got there, else once it does."""
        job = self.jobs.get(container_id)
        if job is not None:
            if (what == "exit" and job.final) or (what == "clean" and job.phase == "done"):
                self.reply(client, {"status": job.status})
            else:
                self.wait_for(client, container_id, what)
            return
        status = read_json(os.path.join(self.root, container_id, STATUS_FILE))
        if (
            status is None
            or status.get("state") not in FINAL_STATES
            or (what == "clean" and Runc.knows(container_id))
        ):
            status = self.settle(container_id)
        self.reply(client, {"status": status})

    # --- stopping

    def stop(self, grace: float | None = None) -> None:
        """Refuse new containers; stop every job with its own grace (at most ``grace``
        seconds when given); exit once all are done."""
        self.stopping = True
        for job in list(self.jobs.values()):
            if job.id not in self.sandbox_jobs:  # a sandbox ends once its tasks have
                job.stop(None if grace is None else min(grace, job.grace))

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGTERM/SIGINT: stop (acted on by the loop, woken through the wakeup fd)."""
        self.stop_signalled = True

    # --- the loop

    def reap_strays(self) -> None:
        """Reap children no job knows (a runc whose own child outlived it, say).

        Peeks at one exited child at a time. A container's init becomes our
        child once runc's child leaves it, which may be before the process we
        started as runc exits (a wrapper around runc, or runc itself still
        finishing), and its job learns its pid only then: so an unknown child is
        a stray only while no job waits for its runc.
        """
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            jobs = list(self.jobs.values())
            if any(info.si_pid in job.known_pids() for job in jobs):
                return
            if any(job.runc_pid for job in jobs):
                return
            os.waitpid(info.si_pid, 0)

    def timeout_ms(self) -> int:
        """How long the loop may sleep before a job's deadline (-1: until an event)."""
        moments = [m for m in (job.next_wakeup() for job in self.jobs.values()) if m is not None]
        moments += [m for m in (sandbox.next_wakeup(self.stopping)
                                for sandbox in self.sandboxes.values()) if m is not None]
        if not moments:
            return -1
        return max(0, int((min(moments) - time.monotonic()) * 1000) + 1)

    def serve(self, listener: socket.socket) -> None:
        """Run until stopped and every job is cleaned up."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        listener.setblocking(False)
        self.watch(listener.fileno(), lambda: self.accept(listener))
        self.watch(wake_r, lambda: self.drain(wake_r))
        while not (self.stopping and not self.jobs):
            for fd, _ in self.poller.poll(self.timeout_ms()):
                callback = self.callbacks.get(fd)
                if callback is not None:
                    self.guarded(callback)
            if self.stop_signalled and not self.stopping:
                self.stop()
            now = time.monotonic()
            for job in list(self.jobs.values()):
                self.guarded(job.tick, now)
            for sandbox in list(self.sandboxes.values()):
                self.guarded(sandbox.tick, now, self.stopping)
            self.reap_strays()
        self.unwatch(listener.fileno())
        self.spare.discard()
        if self.netns is not None:
            self.netns.close()
        for client in self.shutdown_clients:
            client.waiting = None
            self.reply(client, {"ok": True})
        for client in list(self.clients.values()):
            self.drop(client)

    @staticmethod
    def guarded(callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)``; a bug in it is logged, never allowed to kill the monitor."""
        try:
            callback(*args)
        except Exception:
            import traceback

            traceback.print_exc()

    @staticmethod
    def drain(fd: int) -> None:
        """Empty the signal wakeup pipe."""
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
