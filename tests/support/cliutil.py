"""Helpers for tests that run the real ``fuzz`` command and its agent processes."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuzz.testing.cluster import cluster_spec


@dataclass
class Result:
    """A finished fuzz command."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


def write_spec(directory: Path, count: int, cluster: str = "test") -> Path:
    """Write a local-provider spec of ``count`` nodes into ``directory``."""
    path = directory / "fuzz.yaml"
    path.write_text(cluster_spec(cluster, count))
    return path


def fuzz_command(*args: str) -> list[str]:
    """The argv that runs the fuzz CLI of this checkout."""
    return [sys.executable, "-m", "fuzz", "--no-color", *args]


def run_fuzz(cwd: Path, *args: str, timeout: float = 120, stdin: str = "",
             env: dict[str, str] | None = None) -> Result:
    """Run ``fuzz ARGS`` in ``cwd`` (``env``: variables added to this process's environment)."""
    proc = subprocess.run(fuzz_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=stdin, env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_fuzz_in_terminal(cwd: Path, *args: str, typed: str, timeout: float = 60,
                         env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``fuzz ARGS`` on a pseudo-terminal; type ``typed`` at its first prompt.

    The terminal is its stdin, stdout and stderr (not its controlling terminal: it
    runs in a session of its own). Returns the exit code and everything the
    terminal showed, which includes whatever was echoed of ``typed``.
    """
    leader, follower = pty.openpty()
    proc = subprocess.Popen(fuzz_command(*args), cwd=cwd, stdin=follower, stdout=follower,
                            stderr=follower, start_new_session=True,
                            env={**os.environ, **(env or {})})
    os.close(follower)
    shown = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"fuzz {' '.join(args)} showed only {shown!r}"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: every end of the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
            if not answered and shown.rstrip().endswith(b":"):
                os.write(leader, typed.encode() + b"\n")
                answered = True
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    text = shown.decode(errors="replace")
    assert "Traceback" not in text, text
    return proc.wait(timeout), text


def agent_pids(under: Path) -> list[int]:
    """Pids of live agent processes whose command line mentions ``under``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue
        text = [c.decode(errors="replace") for c in cmdline]
        if "fuzz.substrate" in text and any(str(under) in c for c in text):
            pids.append(int(entry.name))
    return pids


def kill_agents(under: Path) -> None:
    """Kill every agent started under ``under`` (test clean-up)."""
    for pid in agent_pids(under):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while agent_pids(under) and time.monotonic() < deadline:
        time.sleep(0.05)


def read_state(directory: Path) -> dict[str, Any]:
    """The recorded state file of a local-backend spec in ``directory``."""
    data: dict[str, Any] = json.loads((directory / ".fuzz" / "state.json").read_text())
    return data
