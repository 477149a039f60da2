"""Spreading the containers of local nodes over the one machine they share.

The local provider runs every node of a cluster as an agent on this machine, and
each agent's leases count the machine's CPUs as the node's own, lowest ids first.
Left alone, the first one-core job of every node is pinned to host CPU 0: the two
ranks of an MPI job on two such "nodes" take turns on one core while the other
cores idle, which separate machines never do (1,000 allreduces over TCP: 68 ms
instead of 7). An agent told the directory that holds its sibling agents' state
dirs (the local provider's cluster directory, ``--share-cpus-with``) pins each
container instead to the host CPUs the fewest running containers of those agents
are pinned to (ties: the lowest id), as many as its lease has.

What is counted is what the siblings' container records say (``spec.json``'s
``cpus`` of each container not yet ended), read at each start, nothing kept: two
containers starting at the same instant on two agents may pick the same CPU
(the starts are not serialised across agents, which would slow a 32-node job's
start). Containers of other clusters on the machine are not counted. The lease
itself (what the node has left) is unchanged: only which real CPUs back it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from fuzz.fsutil import read_json
from fuzz.substrate.monitor.files import CONTAINERS_DIR, SPEC_FILE, STATUS_FILE

ENDED = ("exited", "failed")


def least_used(count: int, host_cpus: Sequence[int], usage: Mapping[int, int]
               ) -> tuple[int, ...]:
    """The ``count`` CPUs of ``host_cpus`` with the fewest containers in ``usage`` (ties:
    lowest id first), sorted; all of them when ``count`` is more."""
    ranked = sorted(host_cpus, key=lambda cpu: (usage.get(cpu, 0), cpu))
    return tuple(sorted(ranked[:count]))


SpecCache = dict[tuple[str, int], tuple[int, ...] | None]
"""What :func:`pinned_cpus` remembers between calls: a container directory's CPUs
(None: it has ended), by its path and inode."""


def pinned_cpus(directory: Path, cache: SpecCache | None = None) -> Counter[int]:
    """How many containers not yet ended, of the agents whose state dirs are in
    ``directory``, are pinned to each host CPU.

    Read at every start of every local node, so with ``os.scandir`` and plain string
    paths (a pathlib glob and a read of every sibling's spec.json and status.json cost
    a tenth of the agent's Python time per start under bench/throughput.py); hidden
    names (the monitor's spares, the agent's trash) are not containers and are not
    opened. With ``cache`` (kept by the caller between calls), a container's CPUs are
    read once (its spec.json is written once) and an ended one is not looked at again
    (an end is final): a call reads the status of the running ones only. The key holds
    the directory's inode, so a new container at a removed one's path is read anew;
    what is gone is forgotten.
    """
    usage: Counter[int] = Counter()
    seen: SpecCache = {}
    for state_dir, _ in _subdirectories(os.fspath(directory)):
        for key in _subdirectories(os.path.join(state_dir, CONTAINERS_DIR)):
            known = cache.get(key, ()) if cache is not None else ()
            cpus = None if known is None else _running_cpus(key[0], known)
            if cpus is not None:
                usage.update(cpus)
            if cpus is None or cpus:  # an empty spec (not written yet) is not remembered
                seen[key] = cpus
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return usage


def _running_cpus(container: str, known: tuple[int, ...]) -> tuple[int, ...] | None:
    """The CPUs of the container at ``container`` (``known``: read before, else empty);
    None once it has ended."""
    status = read_json(os.path.join(container, STATUS_FILE)) or {}
    if status.get("state") in ENDED:
        return None
    if known:
        return known
    cpus = (read_json(os.path.join(container, SPEC_FILE)) or {}).get("cpus")
    if not isinstance(cpus, list):
        return ()
    return tuple(cpu for cpu in cpus if isinstance(cpu, int))


def _subdirectories(directory: str) -> list[tuple[str, int]]:
    """The paths and inodes of ``directory``'s subdirectories but hidden ones (none if it
    is gone)."""
    try:
        with os.scandir(directory) as entries:
            return [(entry.path, entry.inode()) for entry in entries
                    if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
