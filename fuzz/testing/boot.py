"""Play a new machine on this host: run a bootstrap script under a root prefix, stop its agent.

A provider's bootstrap script (:func:`fuzz.plugin.cloudinit.cloud_init_script`) honours
``FUZZ_ROOT``, ``FUZZ_LISTEN`` and ``FUZZ_COMMAND``; :func:`boot` runs it with
those set, so that the agent it starts is a real ``fuzz substrate serve`` on
127.0.0.1 whose files all live under one directory. The conformance kit, the
fake ``wwctl`` and later end-to-end tests use it in place of a VM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fuzz.fsutil import read_json
from fuzz.plugin.cloudinit import ENV_COMMAND, ENV_LISTEN, ENV_ROOT, ENV_START_TIMEOUT
from fuzz.substrate.monitor.files import MONITOR_LOCK
from fuzz.substrate.runtime.containers import ContainerManager
from fuzz.substrate.statedir import INFO_FILE

SCRIPT_NAME = "bootstrap.sh"
AGENT_TOKEN_FILE = "agent-token"  # where fuzz.plugin.cloudinit keeps the agent's own token
STOP_WAIT = 10.0
POLL = 0.02


class BootError(RuntimeError):
    """The bootstrap script failed, or its agent cannot be found; says what it printed."""


@dataclass(frozen=True)
class BootedAgent:
    """The agent a bootstrap script started: where it listens and which process it is."""

    root: Path
    endpoint: str
    pid: int
    state_dir: Path
    token: str


def fuzz_executable() -> str:
    """The ``fuzz`` command of the running Python environment (beside ``sys.executable``)."""
    path = Path(sys.executable).parent / "fuzz"
    if not os.access(path, os.X_OK):
        raise BootError(f"{path} is missing: install fuzz into this environment (make setup)")
    return str(path)


def boot_env(root: Path, listen: str | None = None, timeout: float = 30.0) -> dict[str, str]:
    """The environment that points a bootstrap script at ``root`` instead of the host."""
    env = {
        **os.environ,
        ENV_ROOT: str(root),
        ENV_COMMAND: fuzz_executable(),
        ENV_START_TIMEOUT: str(max(1, round(timeout))),
    }
    if listen is not None:
        env[ENV_LISTEN] = listen
    return env


def find_agent(root: Path) -> BootedAgent | None:
    """The live agent whose state dir lies under ``root``, if any, with its own token."""
    for info_path in sorted(root.rglob(INFO_FILE)):
        info = read_json(info_path)
        if info is None or not isinstance(info.get("pid"), int) or not info.get("endpoint"):
            continue
        if _is_agent_under(info["pid"], root):
            tokens = sorted(root.rglob(AGENT_TOKEN_FILE))
            token = tokens[0].read_text().strip() if tokens else ""
            return BootedAgent(root, str(info["endpoint"]), info["pid"], info_path.parent, token)
    return None


def boot(
    script: str, root: Path, *, listen: str | None = "127.0.0.1:0", timeout: float = 30.0,
    extra_env: Mapping[str, str] | None = None,
) -> BootedAgent:
    """Run ``script`` as a new machine would, under ``root``; return the agent it started.

    ``listen`` overrides the script's listen address (None keeps the script's own).
    Raises BootError with the script's output when it fails.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / SCRIPT_NAME
    path.write_text(script)
    path.chmod(0o700)
    env = {**boot_env(root, listen, timeout), **(extra_env or {})}
    proc = subprocess.run(
        ["/bin/sh", str(path)], env=env, capture_output=True, text=True, timeout=timeout + 10,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        output = " | ".join(line for line in (proc.stdout + proc.stderr).splitlines() if line)
        raise BootError(f"the bootstrap script exited with {proc.returncode}: {output}")
    agent = find_agent(root)
    if agent is None:
        raise BootError(f"the bootstrap script succeeded but no live agent is under {root}")
    return agent


def stop_agents(root: Path, wait: float = STOP_WAIT) -> None:
    """Power off the machines under ``root``: SIGTERM every agent (SIGKILL after ``wait``),
    then stop the container monitor of every agent state dir (jobs outlive an agent, not
    its machine); return once all are gone."""
    _stop_agent_processes(root, wait)
    for lock in root.glob(f"**/{MONITOR_LOCK}"):
        ContainerManager(lock.parent).shutdown_monitor()


def _stop_agent_processes(root: Path, wait: float) -> None:
    pids = _agent_pids(root)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while (alive := [p for p in pids if _is_agent_under(p, root)]) and time.monotonic() < deadline:
        time.sleep(POLL)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    while [p for p in alive if _is_agent_under(p, root)]:
        time.sleep(POLL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _agent_pids(root: Path) -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and _is_agent_under(int(e.name), root)]


def _is_agent_under(pid: int, root: Path) -> bool:
    """True when ``pid`` is a live (not zombie) agent with ``root`` in its command line."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    marker = str(root).encode()
    return b"substrate" in argv and any(marker in arg for arg in argv)
