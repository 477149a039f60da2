"""Exec and port-forward pieces that need no cluster: another network namespace, who may,
and the CLI's answers to bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.substrate.runtime.netns import PortUnreachableError, connect_in_netns
from fuzz.testing.oci import BUSYBOX, free_port
from tests.support.cliutil import run_fuzz

LISTENER = """\
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
conn, _ = server.accept()
conn.sendall(b"inside " + conn.recv(100))
conn.close()
"""


@pytest.fixture
def listener_in_its_own_netns() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process in a new network namespace (loopback up) listening on 127.0.0.1:PORT."""
    for tool in ("unshare", str(BUSYBOX)):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install util-linux busybox-static")
    port = free_port()
    process = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", f'{BUSYBOX} ip link set lo up && exec "$@"', "sh",
         sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    yield process, port
    process.kill()
    process.wait()


def _netns_of_this_thread() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_connect_in_netns_reaches_a_port_only_that_namespace_has(
        listener_in_its_own_netns: tuple[subprocess.Popen[str], int]) -> None:
    process, port = listener_in_its_own_netns
    before = _netns_of_this_thread()
    with pytest.raises(PortUnreachableError, match=f"port {port} in here: Connection refused"):
        connect_in_netns(os.getpid(), port, 5, "here")  # ours has nothing on that port
    with connect_in_netns(process.pid, port, 5, "the listener") as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b"inside hello"
    assert _netns_of_this_thread() == before  # only the helper thread moved


@pytest.fixture
def offline(tmp_path: Path) -> list[str]:
    """``--server`` and ``--token-file`` options for an orchestrator that is not there."""
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    return ["--server", f"127.0.0.1:{free_port()}", "--token-file", str(token), "--insecure"]


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, offline: list[str]) -> None:
    cases = {
        ("port-forward", "wf", "job", "nonsense"):
            "Error: ports 'nonsense': expected LOCAL_PORT:REMOTE_PORT, e.g. 8888:8080",
        ("port-forward", "wf", "job", "8888:0"):
            "Error: ports '8888:0': the local port must be 0-65535 (0: any free one) and the "
            "remote one 1-65535",
        ("exec", "wf", "job", "--tty", "--", "sh"):
            "Error: --tty needs a terminal on stdin (leave --tty out for pipes and files)",
        ("exec", "wf", "job", "--tty", "--json", "--", "sh"):
            "Error: --json and --tty do not go together",
    }
    for (command, *args), message in cases.items():
        result = run_fuzz(tmp_path, "workflow", command, *offline, *args)
        assert (result.code, _errors(result.err)) == (1, [message]), args
    for command, *args in (("exec", "wf", "job", "--", "true"),
                           ("port-forward", "wf", "job", "0:80")):
        result = run_fuzz(tmp_path, "workflow", command, *offline, *args)
        assert result.code == 1 and "in plain text (insecure)" in result.err
        errors = _errors(result.err)
        assert len(errors) == 1 and errors[0].startswith(
            "Error: nothing listens at 127.0.0.1:"), result.err


def _errors(stderr: str) -> list[str]:
    """The lines of ``stderr`` other than --insecure's warning."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("warning:")]
