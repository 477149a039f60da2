"""`make demo`'s parts that fail fast: its registry is recognised by more than a status
code, and ports that are taken are one line, never a traceback.

The whole demo, run twice from a fresh clone with port 5000 held by another process, is
tests/e2e/test_newcomer_e2e.py.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fuzz.testing.oci import MissingPartError, serve_registry
from fuzz.testing.web import serve_handler

ROOT = Path(__file__).resolve().parents[2]


class _AnyRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that is not ours: ``GET /v2/`` answers 200, as every registry does."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def foreign_registry() -> Iterator[int]:
    """Another process's registry on a port of 127.0.0.1; yields the port."""
    with serve_handler(_AnyRegistry) as port:
        yield port


def test_a_registry_that_is_not_ours_on_the_port_is_refused(tmp_path: Path) -> None:
    with foreign_registry() as port, pytest.raises(MissingPartError) as caught, \
            serve_registry(tmp_path, port=port):
        pytest.fail("took another registry answering 200 on /v2/ for the one it started")
    assert f"127.0.0.1:{port} is in use by another process" in str(caught.value)


def test_our_registry_is_recognised(tmp_path: Path) -> None:
    with serve_registry(tmp_path) as registry:
        assert registry.marker and registry.marker in (tmp_path / "config.yml").read_text()


def run_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """scripts/demo.py of this checkout (it fails before it starts anything here)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_a_busy_demo_port_is_one_line(tmp_path: Path) -> None:
    with foreign_registry() as busy:
        done = run_demo(env={"DEMO_PORTS": f"0,{busy},0", "DEMO_DIR": str(tmp_path / "demo")})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"demo: port {busy} (the demo's registry) is in use by another process: free it, or "
        "choose other ports with DEMO_PORTS=ORCHESTRATOR,REGISTRY,WEB (0: any free port)"]


@pytest.mark.parametrize("value", ["7400,5000", "a,b,c", "7400,5000,70000"])
def test_bad_demo_ports_are_one_line(tmp_path: Path, value: str) -> None:
    done = run_demo(env={"DEMO_PORTS": value, "DEMO_DIR": str(tmp_path / "demo")})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"demo: DEMO_PORTS={value}: three TCP ports, ORCHESTRATOR,REGISTRY,WEB "
        "(0: any free port), e.g. DEMO_PORTS=7400,5000,8000"]
