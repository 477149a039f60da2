"""Helpers for tests that run the real ``fuzz`` command and its agent processes."""

from __future__ import annotations

import contextlib
import json
import os
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
