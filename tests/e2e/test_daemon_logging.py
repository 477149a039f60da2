"""The daemons report through ``logging`` only: stamped, levelled, named lines, never print.

The orchestrator (``fuzz server``) and the node agent (``fuzz substrate serve``) run
as real processes here; what they say about themselves must be log records in
:data:`fuzz.daemonlog.LOG_FORMAT`. The container monitor helper cannot be asked to
misbehave on cue, so for it (and every module of the daemons) the last test reads
the source: no ``print`` call anywhere in ``fuzz.orchestrate`` or ``fuzz.substrate``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import fuzz
from fuzz.testing.oci import free_port
from tests.support.cliutil import run_fuzz

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                    r"[\w.]+: .+$")
"""A line as :data:`fuzz.daemonlog.LOG_FORMAT` writes it."""

SPEC = """\
version: 1
cluster: logs
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: .fuzz/server
"""


def test_the_orchestrator_logs_its_start_and_its_insecure_warning(tmp_path: Path) -> None:
    (tmp_path / "fuzz.yaml").write_text(SPEC.format(port=free_port()))
    assert run_fuzz(tmp_path, "init").code == 0
    started = run_fuzz(tmp_path, "server", "--detach", "--insecure")
    assert started.code == 0, started.err
    try:
        log = (tmp_path / ".fuzz" / "server" / "server.log").read_text().splitlines()
    finally:
        run_fuzz(tmp_path, "server", "--stop")
    assert log, "the orchestrator logged nothing"
    assert all(RECORD.match(line) for line in log), log
    assert any(" INFO fuzz.cli.commands_server: orchestrator starting on 127.0.0.1:" in line
               for line in log), log
    assert any(" WARNING fuzz.orchestrate.server: serving plain text (insecure) on " in line
               for line in log), log


def test_the_node_agent_logs_its_insecure_warning(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-token-long-enough-for-the-agent-0123456789\n")
    token.chmod(0o600)
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "fuzz.substrate", "serve", "--listen", "127.0.0.1:0",
             "--state-dir", str(tmp_path / "state"), "--token-file", str(token), "--insecure"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while "serving plain text" not in log_path.read_text():
            assert agent.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait(20)
    lines = log_path.read_text().splitlines()
    assert all(RECORD.match(line) for line in lines), lines
    assert any(" WARNING fuzz.substrate.server: serving plain text (insecure) on 127.0.0.1:"
               in line for line in lines), lines


def _print_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "print"]


def test_no_daemon_module_prints() -> None:
    package = Path(fuzz.__file__).parent
    modules = [path for folder in ("orchestrate", "substrate")
               for path in sorted((package / folder).rglob("*.py"))]
    assert len(modules) > 40, "the daemons' modules were not found"
    assert [call for path in modules for call in _print_calls(path)] == []
