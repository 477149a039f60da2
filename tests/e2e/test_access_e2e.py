"""End to end: exec and port-forward into a running job, through the real CLI, orchestrator,
agent and runc container - and no SSH anywhere.

One local node joins a detached ``fuzz server``; the job serves a page and a 50 MB
file with busybox httpd and echoes with ``nc -e cat``, each on a port of the job's
network namespace (today the node's). ``fuzz workflow port-forward`` and ``fuzz
workflow exec`` run as subprocesses, as a user would run them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuzz.api import orchestrator_pb2 as pb
from fuzz.api import substrate_pb2
from fuzz.cli.execsession import DirectExec
from fuzz.cli.portforward import DirectRefusedError, connect_direct, open_direct, present_ticket
from fuzz.errors import FuzzError
from fuzz.rpc.direct import pump
from fuzz.rpc.tunnel import data_request
from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import fuzz_command, run_fuzz
from tests.support.portforward import Forward
from tests.support.threadsignal import a_thread_other_than_main, signal_thread
from tests.support.workflowutil import LocalCluster, local_cluster

JOB = "notebook"
BIG_MIB = 50
PAGE = "<h1>fuzz notebook</h1>"
FUZZFILE = """\
version: v1
jobs:
  notebook:
    image: {{uri: {image}}}
    script: |
      mkdir -p /tmp/www
      echo '{page}' > /tmp/www/index.html
      dd if=/dev/urandom of=/tmp/www/big bs=1M count={big} 2>/dev/null
      nc -ll -p {echo_port} -e cat &
      exec httpd -f -p 127.0.0.1:{http_port} -h /tmp/www
    resource: {{cpu: {{cores: 1}}, memory: {{size: 256MiB}}}}
"""
SSH_NAMES = ("ssh", "sshd", "dropbear")
SSH_PORT = 22


@dataclass
class Notebook:
    """The running workflow and where its job listens."""

    cluster: LocalCluster
    name: str
    http_port: int
    echo_port: int


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory,
             busybox_image: PushedImage) -> Iterator[Notebook]:
    """One node running the notebook job (a unique workflow name: runc ids are host-wide)."""
    directory = tmp_path_factory.mktemp("access")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [busybox_image.registry.host], free_port(), nodes=1) as cluster:
        running = Notebook(cluster, f"nb{os.getpid()}", free_port(), free_port())
        cluster.start(running.name, FUZZFILE.format(
            image=busybox_image.reference, page=PAGE, big=BIG_MIB,
            http_port=running.http_port, echo_port=running.echo_port))
        cluster.wait_for(running.name, JOB, "RUNNING")
        try:
            yield running
        finally:  # stopped before the node goes, so that its container is cleaned up
            cluster.fuzz("workflow", "cancel", running.name)
            cluster.wait(running.name)


@pytest.fixture(scope="module")
def web(notebook: Notebook) -> Iterator[Forward]:
    """A port-forward to the job's web server, once the page answers through it."""
    forward = Forward(notebook.cluster, notebook.name, JOB, notebook.http_port)
    deadline = time.monotonic() + 60
    while True:  # the job writes its 50 MB before httpd listens
        try:
            fetch(forward.port, "/index.html")
            break
        except OSError:
            assert time.monotonic() < deadline, "the job's httpd never answered"
            time.sleep(0.5)
    yield forward
    forward.stop()


def fetch(port: int, path: str) -> bytes:
    """GET ``path`` from 127.0.0.1:``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as reply:
        data: bytes = reply.read()
    return data


def exec_in(notebook: Notebook, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``fuzz workflow exec NAME notebook -- ARGV`` with ``stdin``."""
    return subprocess.run(fuzz_command("workflow", "exec", notebook.name, JOB, "--", *argv),
                          cwd=notebook.cluster.directory, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_a_page_and_a_50_mb_file_come_through_port_forward(notebook: Notebook,
                                                           web: Forward) -> None:
    assert fetch(web.port, "/").decode().strip() == PAGE
    big = fetch(web.port, "/big")
    assert len(big) == BIG_MIB * 2**20
    in_job = exec_in(notebook, "sha256sum", "/tmp/www/big")
    assert in_job.returncode == 0, in_job.stderr
    assert in_job.stdout.split()[0] == hashlib.sha256(big).hexdigest()


def test_ctrl_c_lets_an_open_connection_finish_then_stops(notebook: Notebook) -> None:
    forward = Forward(notebook.cluster, notebook.name, JOB, notebook.http_port)
    interrupted = False
    try:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=30) as conn:
            conn.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            received = len(conn.recv(65536))
            assert received > 0
            forward.process.send_signal(signal.SIGINT)  # mid-transfer
            interrupted = True
            while chunk := conn.recv(1 << 20):
                received += len(chunk)
        assert received > BIG_MIB * 2**20, "the whole file (and its headers) came through"
    finally:
        code, output = forward.stop(interrupt=not interrupted)
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    closes = [e for e in events if e["event"] == "close"]
    assert [e["error"] for e in closes] == [None], output
    assert events[-1] == {"event": "stopped", "open_connections": 0}
    assert code == 0


def test_ctrl_c_that_lands_on_another_thread_stops_port_forward(notebook: Notebook) -> None:
    forward = Forward(notebook.cluster, notebook.name, JOB, notebook.http_port)
    pid = forward.process.pid
    try:
        signal_thread(pid, a_thread_other_than_main(pid), signal.SIGINT)
        forward.process.wait(5)
    finally:
        code, output = forward.stop(interrupt=forward.process.poll() is None)
    assert code == 0 and '"stopped"' in output, output


def test_twenty_concurrent_connections_close_cleanly_both_ways(notebook: Notebook) -> None:
    forward = Forward(notebook.cluster, notebook.name, JOB, notebook.echo_port)
    try:
        conns = []
        for index in range(20):  # one at a time: busybox nc accepts with a backlog of 1
            conn = socket.create_connection(("127.0.0.1", forward.port), timeout=30)
            conn.sendall(f"{index}\n".encode())
            assert conn.recv(100) == f"{index}\n".encode()
            conns.append(conn)

        def talk(index: int) -> bytes:  # all 20 are open while they talk at once
            conns[index].sendall(f"connection {index} says hello\n".encode() * 1000)
            conns[index].shutdown(socket.SHUT_WR)  # half-close: the echo still comes back
            received = b""
            while chunk := conns[index].recv(65536):
                received += chunk
            conns[index].close()
            return received

        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(talk, range(20)))
        for index, reply in enumerate(replies):
            assert reply == f"connection {index} says hello\n".encode() * 1000
        events = forward.events(40)
        assert sorted(e["connection"] for e in events if e["event"] == "open") == list(
            range(1, 21))
        closes = [e for e in events if e["event"] == "close"]
        assert len(closes) == 20
        assert all(e["error"] is None and e["sent_bytes"] == e["received_bytes"] > 0
                   for e in closes), closes
    finally:
        code, output = forward.stop()
    assert code == 0 and '"stopped"' in output


def test_exec_streams_stdin_stdout_stderr_and_returns_the_exit_code(notebook: Notebook) -> None:
    done = exec_in(notebook, "sh", "-c", "cat; id -u; echo to-stderr >&2; exit 7",
                   stdin="from stdin\n")
    assert done.returncode == 7
    # the job owner's (the admin's) uid, the first of orchestrator.job_ids; not root
    assert done.stdout == "from stdin\n200000\n"
    assert done.stderr == "to-stderr\n"
    killed = exec_in(notebook, "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + 9


def test_exec_with_a_tty_follows_the_window_and_restores_the_terminal(
        notebook: Notebook) -> None:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    # setsid --ctty: the pty becomes the CLI's controlling terminal, so resizing it
    # sends the CLI SIGWINCH, as a terminal emulator's window would
    process = subprocess.Popen(
        ["setsid", "--ctty", *fuzz_command("workflow", "exec", notebook.name, JOB, "--tty",
                                           "--", "sh")],
        cwd=notebook.cluster.directory, stdin=slave, stdout=slave, stderr=slave)
    try:
        screen = PtyScreen(master)
        screen.expect(b"$ ")
        screen.type(b"stty size; tty\r")
        screen.expect(b"30 100\r\n/dev/pts/")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        time.sleep(0.5)  # SIGWINCH -> the CLI -> the orchestrator -> the agent -> runc
        screen.type(b"stty size\r")
        screen.expect(b"40 120\r\n")
        screen.type(b"exit 5\r")
        assert process.wait(timeout=30) == 5
        assert termios.tcgetattr(slave) == before  # raw mode undone
        process = subprocess.Popen(  # not in the image: said as a shell would, and 127
            fuzz_command("workflow", "exec", notebook.name, JOB, "--tty", "--", "/no/such"),
            cwd=notebook.cluster.directory, stdin=slave, stdout=slave, stderr=slave)
        screen.expect(b"no such file in the image: /no/such")
        assert process.wait(timeout=30) == 127
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
        os.close(slave)


class PtyScreen:
    """What a program wrote to a pseudo-terminal, read from its master side."""

    def __init__(self, master: int) -> None:
        """Read from ``master``."""
        self.master = master
        self.seen = b""

    def type(self, keys: bytes) -> None:
        """Type ``keys`` on the terminal."""
        os.write(self.master, keys)

    def expect(self, text: bytes, timeout: float = 30) -> None:
        """Wait until ``text`` appears in the output after what was expected before."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never came; the screen shows {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.seen += os.read(self.master, 65536)
        self.seen = self.seen[self.seen.index(text) + len(text):]


def test_exec_and_port_forward_refuse_what_is_not_running(notebook: Notebook) -> None:
    missing = exec_in(notebook, "/no/such/program")
    assert (missing.returncode, missing.stderr) == (
        127, "no such file in the image: /no/such/program\n")
    done = notebook.cluster.fuzz("workflow", "exec", notebook.name, "nosuchjob", "--", "true")
    assert done.code == 1 and done.err.strip() == (
        f"Error: workflow '{notebook.name}' has no job or task 'nosuchjob'")
    forward = Forward(notebook.cluster, notebook.name, JOB, free_port())  # nothing listens there
    try:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=30) as conn:
            assert conn.recv(10) == b""  # closed, as the far side refused
        _, closed = forward.events(2)
        assert "Connection refused" in str(closed["error"]), closed
    finally:
        forward.stop()
    with notebook.cluster.client() as client, pytest.raises(FuzzError) as refused:
        list(client.port_forward(iter([data_request(b"no task named first")])))
    assert "the first request must name the task and open a connection" in str(refused.value)


def _fuzz_processes(notebook: Notebook, extra: list[int]) -> set[int]:
    """The orchestrator, the agents and their monitors, the jobs, and ``extra``, with every
    descendant."""
    directory = str(notebook.cluster.directory)
    roots = {notebook.cluster.server_pid(), *extra}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
        if "fuzz.substrate" in cmdline and directory in cmdline:
            roots.add(int(entry.name))  # agents and container monitors
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _names(pids: set[int]) -> dict[int, str]:
    """pid -> command name, for those of ``pids`` still there when read (any may exit)."""
    names = {}
    for pid in pids:
        try:
            names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
    return names


def _listening_ports(pids: set[int]) -> dict[int, int]:
    """Listening TCP port -> pid, for sockets the processes ``pids`` hold."""
    inodes: dict[str, int] = {}
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes[fields[9]] = int(fields[1].rpartition(":")[2], 16)
    ports: dict[int, int] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            inode = link.removeprefix("socket:[").removesuffix("]")
            if link.startswith("socket:[") and inode in inodes:
                ports[inodes[inode]] = pid
    return ports


def test_no_process_of_the_system_runs_or_listens_for_ssh(notebook: Notebook,
                                                          web: Forward) -> None:
    shell = subprocess.Popen(fuzz_command("workflow", "exec", notebook.name, JOB, "--",
                                          "sleep", "30"), cwd=notebook.cluster.directory)
    try:
        deadline = time.monotonic() + 30  # until the exec is under way: its sleep exists
        while True:
            pids = _fuzz_processes(notebook, [web.process.pid, shell.pid])
            names = _names(pids)
            if "sleep" in names.values() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # the exec'd sleep is the agent's descendant (runc detached from it: its reaper's)
        assert "sleep" in names.values() and "httpd" in names.values(), names
        assert not {pid: n for pid, n in names.items() if n in SSH_NAMES}
        ports = _listening_ports(pids)
        assert SSH_PORT not in ports
        server = json.loads((notebook.cluster.data_dir / "server.json").read_text())
        expected = {int(server["endpoint"].rpartition(":")[2]), web.port, notebook.http_port,
                    notebook.echo_port, int(server["endpoints_url"].rpartition(":")[2]),
                    int(server["metrics"].rpartition(":")[2]),
                    int(server["ui_url"].rstrip("/").removesuffix("/ui").rpartition(":")[2])}
        agents = {port: pid for port, pid in ports.items() if port not in expected}
        # and the node's agent, on its gRPC port, its direct TLS port and its metrics
        # listener: nothing else listens
        assert len(agents) == 3 and len(set(agents.values())) == 1, ports
    finally:
        shell.kill()  # the caller goes away: so does its process in the job
        shell.wait()
    deadline = time.monotonic() + 20
    while "sleep" in _names(_fuzz_processes(notebook, [])).values():
        assert time.monotonic() < deadline, "the exec'd sleep outlived its caller"
        time.sleep(0.2)


def test_exec_and_port_forward_need_permission_and_the_curtain_blocks_everyone(
        notebook: Notebook, tmp_path: Path) -> None:
    cluster = notebook.cluster
    added = cluster.ok("iam", "user", "add", f"mallory{os.getpid()}", "--role", "user", "--json")
    laptop = {"FUZZ_CONFIG": str(tmp_path / "config.yaml")}
    address = json.loads((cluster.data_dir / "server.json").read_text())["endpoint"]
    logged_in = run_fuzz(tmp_path, "login", address, "--code", added.json()["code"],
                         "--ca-file", str(cluster.data_dir / "ca.pem"), env=laptop)
    assert logged_in.code == 0, logged_in.err
    # a user may not reach into another user's (here the admin's) job: for them it is not
    # there, whether they name their own workflow of that name or the admin's
    for ref in (notebook.name, f"admin/{notebook.name}"):
        denied = run_fuzz(tmp_path, "workflow", "exec", ref, JOB, "--", "true", env=laptop)
        assert denied.code == 1 and f"no workflow '{ref}'" in denied.err, denied.err
        assert "Traceback" not in denied.err and len(denied.err.strip().splitlines()) == 1
    # the curtain: exec and port-forward off for everyone, the admin included
    cluster.ok("iam", "curtain", "on")
    try:
        curtained = cluster.fuzz("workflow", "exec", notebook.name, JOB, "--", "true")
        assert curtained.code == 1 and "workflow:exec" in curtained.err, curtained.err
        forward = Forward(cluster, notebook.name, JOB, notebook.http_port)
        try:
            with socket.create_connection(("127.0.0.1", forward.port), timeout=30) as conn:
                assert conn.recv(10) == b""
            _, closed = forward.events(2)
            assert "workflow:port-forward" in str(closed["error"]), closed
        finally:
            forward.stop()
    finally:
        cluster.ok("iam", "curtain", "off")
    assert exec_in(notebook, "true").returncode == 0
    audit = (cluster.data_dir / "audit.log").read_text()
    assert '"action": "workflow:exec"' in audit and '"allowed": false' in audit


def _ticket(notebook: Notebook, port: int) -> pb.DirectTicket:
    """A direct ticket for ``port`` of the job, as the CLI asks for one."""
    with notebook.cluster.client() as client:
        return client.open_port_forward(pb.PortForwardRequest(
            workflow=notebook.name, task=JOB, frame=substrate_pb2.PortForwardFrame(
                open=substrate_pb2.PortForwardOpen(port=port))))


def test_connections_go_straight_to_the_agent_and_through_the_orchestrator_when_it_is_out_of_reach(
        notebook: Notebook) -> None:
    direct_port = _ticket(notebook, notebook.http_port).port
    assert direct_port
    forward = Forward(notebook.cluster, notebook.name, JOB, notebook.http_port)
    rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(direct_port), "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    try:
        assert fetch(forward.port, "/index.html").decode().strip() == PAGE
        _, closed = forward.events(2)
        assert (closed["path"], closed["error"]) == ("direct", None), closed
        subprocess.run(["iptables", "-I", *rule], check=True)  # the node is out of reach
        try:
            big = fetch(forward.port, "/big")
            _, relayed = forward.events(2)
        finally:
            subprocess.run(["iptables", "-D", *rule], check=True)
        assert len(big) == BIG_MIB * 2**20
        assert (relayed["path"], relayed["error"]) == ("relay", None), relayed
        assert relayed["received_bytes"] > BIG_MIB * 2**20
    finally:
        forward.stop()


def _echoed_through(ticket: pb.DirectTicket, payload: bytes) -> bytes:
    """What the echo server sends back of ``payload`` through a direct connection on
    ``ticket`` (the sending side half-closed after it, as cat ends)."""
    tls = connect_direct(ticket)
    assert tls is not None
    local, far = socket.socketpair()
    with tls, local, far:
        pumping = threading.Thread(target=pump, args=(tls, local))
        pumping.start()
        far.sendall(payload)
        far.shutdown(socket.SHUT_WR)  # cat ends: so does the job's side
        echoed = b""
        while data := far.recv(100):
            echoed += data
        pumping.join(timeout=30)
    return echoed


def test_a_direct_ticket_is_single_use_and_a_forged_one_is_refused(notebook: Notebook) -> None:
    ticket = _ticket(notebook, notebook.echo_port)
    assert ticket.ticket and ticket.server_name and b"BEGIN CERTIFICATE" in ticket.ca_pem
    assert _echoed_through(ticket, b"hello\n") == b"hello\n"
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(ticket)
    forged = pb.DirectTicket()
    forged.CopyFrom(ticket)
    forged.ticket = os.urandom(len(ticket.ticket))
    with pytest.raises(DirectRefusedError, match="not valid"):
        connect_direct(forged)


def _exec_ticket(notebook: Notebook, *argv: str) -> pb.DirectTicket:
    """A direct exec ticket for ``argv`` in the job, as the CLI asks for one."""
    with notebook.cluster.client() as client:
        return client.open_exec(pb.ExecRequest(
            workflow=notebook.name, task=JOB,
            input=substrate_pb2.ExecInput(start=substrate_pb2.ExecStart(args=argv))))


def _run_direct(ticket: pb.DirectTicket, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    """Redeem ``ticket`` as the CLI does, with ``stdin``: (exit code, stdout, stderr)."""
    tls = open_direct(ticket)
    assert tls is not None
    present_ticket(tls, ticket)
    stdout, stderr = io.BytesIO(), io.BytesIO()
    with tls, contextlib.ExitStack() as session, tempfile.TemporaryFile() as source:
        source.write(stdin)
        source.seek(0)
        code = DirectExec(tls, source.fileno(), stdout, stderr).run(session, tty=False)
    return code, stdout.getvalue(), stderr.getvalue()


def exec_json(notebook: Notebook, *argv: str) -> dict[str, Any]:
    """``fuzz workflow exec --json NAME notebook -- ARGV``'s answer."""
    done = subprocess.run(fuzz_command("workflow", "exec", "--json", notebook.name, JOB, "--",
                                       *argv), cwd=notebook.cluster.directory,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    answer: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == answer["exit_code"], done.stderr
    return answer


def test_exec_goes_straight_to_the_agent_and_50_mib_of_stdout_arrive_whole(
        notebook: Notebook) -> None:
    answer = exec_json(notebook, "sh", "-c", "echo out; echo err >&2; exit 4")
    assert answer == {"exit_code": 4, "path": "direct", "stdout": "out\n", "stderr": "err\n"}
    expected = exec_in(notebook, "sha256sum", "/tmp/www/big").stdout.split()[0]
    big = subprocess.run(fuzz_command("workflow", "exec", notebook.name, JOB, "--", "sh", "-c",
                                      "cat /tmp/www/big; exit 3"),
                         cwd=notebook.cluster.directory, capture_output=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert big.returncode == 3, big.stderr
    assert len(big.stdout) == BIG_MIB * 2**20
    assert hashlib.sha256(big.stdout).hexdigest() == expected
    # stdin of a few MiB in, half-closed, all of it out again
    payload = os.urandom(3 * 2**20 + 5)
    code, out, err = _run_direct(_exec_ticket(notebook, "sh", "-c", "cat; echo done >&2"),
                                 payload)
    assert (code, out, err) == (0, payload, b"done\n")


def test_an_exec_ticket_runs_only_its_command_once_and_a_forged_one_is_refused(
        notebook: Notebook) -> None:
    ticket = _exec_ticket(notebook, "echo", "granted")
    assert ticket.port and ticket.ticket
    assert _run_direct(ticket) == (0, b"granted\n", b"")
    with pytest.raises(DirectRefusedError, match="not valid"):
        _run_direct(ticket)  # replayed
    forged = pb.DirectTicket()
    forged.CopyFrom(ticket)
    forged.ticket = os.urandom(len(ticket.ticket))
    with pytest.raises(DirectRefusedError, match="not valid"):
        _run_direct(forged)
    # a port-forward's ticket opens its port, and runs nothing: what exec frames would ask
    # for goes to the port (the echo server) as bytes
    exec_frame = b"\x01\x00\x00\x00\x03id\n"
    assert _echoed_through(_ticket(notebook, notebook.echo_port), exec_frame) == exec_frame


def test_exec_is_relayed_through_the_orchestrator_when_the_agent_is_out_of_reach(
        notebook: Notebook) -> None:
    direct_port = _exec_ticket(notebook, "true").port
    assert direct_port
    rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(direct_port), "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-I", *rule], check=True)  # the node is out of reach
    try:
        answer = exec_json(notebook, "sh", "-c", "echo relayed; exit 6")
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    assert answer == {"exit_code": 6, "path": "relay", "stdout": "relayed\n", "stderr": ""}


def test_many_direct_exec_sessions_at_once_each_get_their_own_stdio_and_exit_code(
        notebook: Notebook) -> None:
    tickets = [_exec_ticket(notebook, "sh", "-c", f"cat; exit {n}") for n in range(10)]
    payloads = [os.urandom(200_000 + n) for n in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(_run_direct, tickets, payloads))
    assert results == [(n, payloads[n], b"") for n in range(10)]


def _agent_pid(notebook: Notebook) -> int:
    """The pid of the cluster's one agent."""
    (info,) = notebook.cluster.directory.glob(".fuzz/nodes/*/*/agent.json")
    return int(json.loads(info.read_text())["pid"])


def test_an_execs_output_pipes_are_the_agents_own_with_nothing_relaying_between(
        notebook: Notebook) -> None:
    # the process says which pipes its stdout and stderr are, then waits on its stdin
    process = subprocess.Popen(
        fuzz_command("workflow", "exec", notebook.name, JOB, "--", "sh", "-c",
                     "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2; read x"),
        cwd=notebook.cluster.directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stderr is not None
        pipes = [process.stdout.readline().decode().strip(),
                 process.stderr.readline().decode().strip()]
        assert all(pipe.startswith("pipe:[") for pipe in pipes), pipes
        fds = Path(f"/proc/{_agent_pid(notebook)}/fd")
        agents = {os.readlink(fd) for fd in fds.iterdir() if fd.name.isdigit()}
        assert set(pipes) <= agents, (pipes, "not the agent's: something relays them")
        assert process.communicate(b"\n", timeout=60)[0] == b""
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
