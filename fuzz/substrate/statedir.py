"""The agent's state directory: its files, its lock, and how others read them.

The agent (:mod:`fuzz.substrate.server`) writes these files and whoever manages
agents (the ``local`` provider) reads them; both sides use this module, which
imports neither gRPC nor the generated stubs. How the files are written and
locked is :mod:`fuzz.fsutil`'s, which the orchestrator's data dir shares.

``agent.lock``
    exclusively ``flock``-ed for the agent's whole life and holding its pid; a
    second agent on the same dir refuses to start, and anyone can tell a live agent
    from a dead one with a non-blocking lock attempt (:func:`lock_held`).
``agent.json``
    written atomically once the server answers (pid, endpoint, started_at,
    version, node_id); removed on a clean stop.
``node-id``
    the node's stable identity, made on the first start.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fuzz.fsutil import flock_held, write_atomic

LOCK_FILE = "agent.lock"
INFO_FILE = "agent.json"
NODE_ID_FILE = "node-id"


def lock_held(state_dir: Path) -> bool:
    """True while a live agent holds ``state_dir/agent.lock``."""
    return flock_held(state_dir / LOCK_FILE)


def lock_pid(state_dir: Path) -> int | None:
    """The pid written into ``agent.lock`` by its holder (None when there is none)."""
    try:
        text = (state_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_node_id(state_dir: Path) -> str:
    """The node's stable id, kept in ``state_dir/node-id`` (made on first use)."""
    path = state_dir / NODE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    new = uuid.uuid4().hex
    write_atomic(path, (new + "\n").encode(), durable=False)
    return new
