"""Deleting a container whose init has ended without starting ``runc delete``, where that is safe.

For such a container ``runc delete`` does three things: it runs the config's
poststop hooks, removes the container's cgroups (one directory per hierarchy)
and removes runc's state directory. Its process costs about 7.5 ms of CPU, 5 of
them the Go runtime starting: a tenth of all the CPU fuzz spends on a short job.
So the monitor does those steps itself when the case is plain (the init reaped,
no hooks, no Intel RDT group, paths under ``/sys/fs/cgroup``) and leaves every
other case to ``runc delete --force``. A cgroup that still holds processes
(``rmdir`` answers EBUSY) is such a case: runc waits for it to empty.

This reads runc's ``state.json`` (libcontainer's state: ``id``, ``cgroup_paths``,
``intel_rdt_path``, ``config.hooks``), a format runc has kept since 1.0; anything
unexpected in it also means "let runc do it". Imported by the monitor process.
"""

from __future__ import annotations

import json
import os
import shutil

from fuzz.substrate.monitor.runc import RUNC_STATE_ROOT

CGROUP_ROOT = "/sys/fs/cgroup/"


def delete_ended(container_id: str, state_root: str = RUNC_STATE_ROOT) -> bool:
    """Remove an ended container's cgroups and runc state; False: use ``runc delete``.

    Call only once the container's init has been reaped. Safe to fall back after a
    False: what was removed already, runc finds gone and skips.
    """
    directory = os.path.join(state_root, container_id)
    try:
        with open(os.path.join(directory, "state.json"), "rb") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return False
    paths = _cgroup_paths(state, container_id)
    if paths is None:
        return False
    for path in sorted(paths, key=len, reverse=True):  # hierarchies may share a directory
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue
        except OSError:
            return False
    try:
        shutil.rmtree(directory)
    except OSError:
        return False
    return True


def _cgroup_paths(state: object, container_id: str) -> set[str] | None:
    """The cgroup directories to remove, or None when runc should do the deleting."""
    if not isinstance(state, dict) or state.get("id") != container_id:
        return None
    if state.get("intel_rdt_path"):
        return None
    config = state.get("config")
    hooks = config.get("hooks") if isinstance(config, dict) else None
    if hooks and (not isinstance(hooks, dict) or any(hooks.values())):
        return None
    paths = state.get("cgroup_paths")
    if not isinstance(paths, dict):
        return None
    found = set(paths.values())
    if not all(isinstance(p, str) and p.startswith(CGROUP_ROOT) and ".." not in p for p in found):
        return None
    return found
