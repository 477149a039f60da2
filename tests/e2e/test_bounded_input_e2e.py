"""End to end: bad or huge Fuzzfiles cost a running orchestrator next to nothing.

A real ``fuzz server`` (its own process, TLS) gets six YAML alias bombs at once
through six ``fuzz workflow start`` (then six dense Fuzzfiles of half a million
values); each is refused at once with one line, the server's memory (VmRSS) stays
near its baseline and ``workflow list`` stays fast.
A Fuzzfile over ``orchestrator.limits.fuzzfile_bytes`` is refused by the CLI before
it is sent and, sent anyway (straight through the API), by the server before it is
parsed, with the same line; one past gRPC's message limit gets a clear line too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.orchestrate.connect import CA_FILE, admin_token_path
from fuzz.rpc.client import ClientTls
from fuzz.spec.fuzzfile_loader import MAX_FUZZFILE_VALUES
from fuzz.testing.cluster import cluster_spec
from fuzz.testing.oci import free_port
from tests.engine.test_fuzzfile_bounds import alias_bomb, big_fuzzfile, oversize_line
from tests.support.cliutil import Result, run_fuzz

MiB = 1024 * 1024
BOMB_LINE = "bomb.yaml:5:45: aliases expand the document by more than 10000 values " \
            "(an alias bomb?)"


@dataclass(frozen=True)
class Server:
    """A detached ``fuzz server`` next to its spec in ``directory``."""

    directory: Path

    @property
    def data_dir(self) -> Path:
        return self.directory / ".fuzz" / "server"

    def info(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.data_dir / "server.json").read_text())
        return data

    def rss(self) -> int:
        """The server's resident memory now, in bytes (VmRSS of /proc/PID/status)."""
        status = Path(f"/proc/{self.info()['pid']}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def fuzz(self, *args: str, timeout: float = 120) -> Result:
        return run_fuzz(self.directory, *args, timeout=timeout)

    def client(self) -> OrchestratorClient:
        """The API as the admin, straight (no CLI checks in between)."""
        return OrchestratorClient(str(self.info()["endpoint"]),
                                  admin_token_path(self.data_dir).read_text().strip(),
                                  tls=ClientTls((self.data_dir / CA_FILE).read_bytes()))


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "fuzz.yaml").write_text(cluster_spec("bounds", 1, orchestrator_port=free_port()))
    running = Server(tmp_path)
    assert running.fuzz("init").code == 0
    started = running.fuzz("server", "--detach")
    assert started.code == 0, started
    try:
        yield running
    finally:
        running.fuzz("server", "--stop")


def six_at_once(server: Server, file: str, line: str) -> None:
    """Start ``file`` six times at once: each refused with ``line``, the server's memory
    kept within 50 MB of what it was and ``workflow list`` fast after."""
    assert server.fuzz("workflow", "list").code == 0  # warm: the first calls load code
    baseline = server.rss()

    def start(index: int) -> tuple[Result, float]:
        began = time.monotonic()
        result = server.fuzz("workflow", "start", f"bad{index}", file, timeout=120)
        return result, time.monotonic() - began

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(start, range(6)))
    for result, took in outcomes:
        assert result.code == 1, result
        assert result.err.strip().splitlines()[-1].endswith(line), result.err
        assert took < 20, f"{file} took {took:.1f} s to be refused"
    grown = server.rss() - baseline
    assert grown < 50 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
    began = time.monotonic()
    listed = server.fuzz("workflow", "list")
    assert listed.code == 0, listed
    assert time.monotonic() - began < 5


def test_six_alias_bombs_at_once_leave_the_server_as_it_was(server: Server) -> None:
    (server.directory / "bomb.yaml").write_text(alias_bomb())
    six_at_once(server, "bomb.yaml", BOMB_LINE)


def test_six_dense_fuzzfiles_at_once_leave_the_server_as_it_was(server: Server) -> None:
    text = "version: v1\nx: [" + "1," * (MiB // 2 - 20) + "1]\njobs: {}\n"  # under 1 MiB
    (server.directory / "dense.yaml").write_text(text)
    column = 5 + 2 * (MAX_FUZZFILE_VALUES - 5)
    six_at_once(server, "dense.yaml",
                f"dense.yaml:2:{column}: the document has more than {MAX_FUZZFILE_VALUES} values")


def test_a_fuzzfile_over_the_limit_is_refused_by_the_cli_and_by_the_server(
        server: Server) -> None:
    huge = server.directory / "huge.yaml"
    huge.write_text(big_fuzzfile(20 * MiB))
    began = time.monotonic()
    refused = server.fuzz("workflow", "start", "huge", "huge.yaml")
    assert time.monotonic() - began < 15
    assert refused.code == 1, refused
    assert refused.err.strip() == oversize_line("huge.yaml", huge.stat().st_size, MiB)

    large_text = big_fuzzfile(MiB + 4096)  # over the limit, within gRPC's 4 MiB
    size = len(large_text.encode())
    with server.client() as client, pytest.raises(FuzzError) as caught:
        client.start_workflow("large", large_text, "large.yaml")
    assert str(caught.value) == oversize_line("large.yaml", size, MiB)

    with server.client() as client, pytest.raises(FuzzError) as caught:
        client.start_workflow("huge", huge.read_text(), "huge.yaml")
    assert "the orchestrator takes no request this large" in str(caught.value)
    assert "orchestrator.limits.fuzzfile_bytes" in str(caught.value)
    assert server.fuzz("workflow", "list").code == 0  # the server is still there
