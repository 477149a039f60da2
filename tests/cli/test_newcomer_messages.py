"""The messages a newcomer meets first (issue 24, item 4), each through the real CLI: an
apply that only removes nodes, `fuzz plan` of fixed pools, an orchestrator that is not
there (a name DNS cannot resolve, a server that is not fuzz's, nothing listening) and
gRPC's own log lines kept off the terminal.
"""

from __future__ import annotations

import http.server
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fuzz.testing.cluster import cluster_spec
from fuzz.testing.oci import free_port
from fuzz.testing.web import serve_handler
from tests.support.cliutil import fuzz_command, kill_agents, run_fuzz, write_spec


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for a local spec; any agent left behind is killed afterwards."""
    yield tmp_path
    kill_agents(tmp_path)


def test_an_apply_that_only_removes_nodes_is_an_apply(cluster_dir: Path) -> None:
    write_spec(cluster_dir, 2)
    assert run_fuzz(cluster_dir, "init").code == 0
    assert run_fuzz(cluster_dir, "apply", "--auto-approve").code == 0
    write_spec(cluster_dir, 1)
    fewer = run_fuzz(cluster_dir, "apply", "--auto-approve")
    assert fewer.code == 0, fewer.err
    assert "Apply complete! Resources: 0 added, 0 changed, 1 destroyed." in fewer.out
    assert "Destroy complete!" not in fewer.out
    gone = run_fuzz(cluster_dir, "destroy", "--auto-approve")
    assert "Destroy complete! Resources: 0 added, 0 changed, 1 destroyed." in gone.out


def test_plan_of_fixed_pools_says_nothing_of_elastic_pools(cluster_dir: Path) -> None:
    (cluster_dir / "fuzz.yaml").write_text(cluster_spec("fixed", 2, orchestrator_port=free_port()))
    assert run_fuzz(cluster_dir, "init").code == 0
    planned = run_fuzz(cluster_dir, "plan")  # no orchestrator runs: min = max is apply's alone
    assert planned.code == 0, planned.err
    assert "Elastic pools" not in planned.out
    spec = (cluster_dir / "fuzz.yaml").read_text().replace("min: 2", "min: 0")
    (cluster_dir / "fuzz.yaml").write_text(spec)
    elastic = run_fuzz(cluster_dir, "plan")
    line = next(line for line in elastic.out.splitlines() if line.startswith("Elastic pools"))
    assert line.startswith("Elastic pools: planned with their recorded members within min and "
                           "max; the orchestrator did not answer: nothing listens at "), line
    assert not line.endswith("?."), line


class _NotFuzz(http.server.BaseHTTPRequestHandler):
    """A web server where the orchestrator was expected."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def web_server() -> Iterator[int]:
    """An HTTP/1 server on a port of 127.0.0.1; yields the port."""
    with serve_handler(_NotFuzz) as port:
        yield port


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file (whatever token: no call gets that far)."""
    path = tmp_path / "token"
    path.write_text("fzt_not-used\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A cluster CA, as `fuzz init` makes it."""
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "fuzz.yaml").write_text(
        cluster_spec("ca", 1, orchestrator_port=free_port()))
    assert run_fuzz(tmp_path / "cluster", "init").code == 0
    return tmp_path / "cluster" / ".fuzz" / "server" / "ca.pem"


def errors_of(tmp_path: Path, server: str, *access: str, token_file: Path,
              no_network: bool = False) -> list[str]:
    """The lines `fuzz workflow list --server SERVER` writes on stderr (exit 1 asserted)."""
    argv = fuzz_command("workflow", "list", "--server", server, "--token-file", str(token_file),
                        *access)
    if no_network:  # a network namespace of its own with nothing in it: no query leaves
        argv = ["unshare", "--net", *argv]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GRPC_DNS_RESOLVER": "native"})
    assert done.returncode == 1, done.stdout
    return [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]


def test_a_host_name_dns_cannot_resolve_is_named(tmp_path: Path, token_file: Path) -> None:
    lines = errors_of(tmp_path, "orchestrator.invalid:7400", "--insecure",
                      token_file=token_file, no_network=True)
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: cannot resolve orchestrator.invalid (DNS): "), lines


def test_a_server_that_is_not_fuzz_is_told_from_none(tmp_path: Path, token_file: Path,
                                                     ca_file: Path) -> None:
    with web_server() as port:
        plain = errors_of(tmp_path, f"127.0.0.1:{port}", "--insecure", token_file=token_file)
        tls = errors_of(tmp_path, f"127.0.0.1:{port}", "--ca-file", str(ca_file),
                        token_file=token_file)
    assert plain == [f"Error: something answers at 127.0.0.1:{port}, but not a fuzz "
                     "orchestrator: it does not speak gRPC (HTTP/2)"]
    # gRPC's own log line (`I1206 … Handshake failed …`) never reaches the terminal
    assert tls == [f"Error: something answers at 127.0.0.1:{port}, but not a fuzz "
                   "orchestrator over TLS: the TLS handshake failed (a plain-text server? "
                   "then --insecure)"]
    free = free_port()
    nothing = errors_of(tmp_path, f"127.0.0.1:{free}", "--insecure", token_file=token_file)
    assert nothing == [f"Error: nothing listens at 127.0.0.1:{free}: is `fuzz server` "
                       "running there?"]


def test_the_grace_of_a_stopped_job_is_told(tmp_path: Path) -> None:
    helped = run_fuzz(tmp_path, "workflow", "stop", "--help")
    assert "running ones get SIGTERM, then SIGKILL 10 s later" in " ".join(helped.out.split())
