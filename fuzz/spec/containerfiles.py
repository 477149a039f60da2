"""Files placed in a job's container (a Fuzzfile job's ``files``): the rules both ends keep.

A Fuzzfile check reports a broken rule at its key (:mod:`fuzz.spec.fuzzfile_values`,
:mod:`fuzz.spec.fuzzfile_checks`); the node agent applies the same rules again to every
start request (:mod:`fuzz.substrate.runtime.bundle`), since it does not trust its caller.
Standard library only, so that both ends can import it.

A file is written into the container's own directory on the node and bind-mounted,
read-only, at its path: so the path must be absolute and written in normal form (one
spelling per file), not ``/`` and not under ``/proc``, ``/sys`` or ``/dev`` (the
runtime's own file systems), and it must not be at, under or above a volume's mount
location (runc would make the mount point inside the volume, on shared storage) or
another file's path.
"""

from __future__ import annotations

import posixpath

MAX_FILES_BYTES = 2 * 1024 * 1024
"""The most bytes one container's files may hold in all (2 MiB).

They come from a Fuzzfile (1 MiB by default), but one top-level entry may be placed at
several paths, and the agent must not trust the caller: it refuses more. The bound keeps
a start request well within gRPC's 4 MiB message limit on the agent."""
MAX_FILES = 256
"""The most files one container may be given (each is a bind mount)."""
RESERVED_TOPS = ("/proc", "/sys", "/dev")
"""Where the container runtime mounts its own file systems: no file goes there."""


def within(path: str, top: str) -> bool:
    """Whether the normal absolute ``path`` is ``top`` or below it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


FUZZ_DIR = "/.fuzz"
"""Where fuzz places what it adds to a container: no job file or mount may be there."""
SCRIPT_PATH = FUZZ_DIR + "/script"
"""Where a ``script`` with a ``#!`` line is placed (read-only, 0755) and run from."""


def reserved_problem(path: str) -> str | None:
    """Why the normal absolute ``path`` (a job file's or a mount's) is fuzz's own."""
    if within(path, FUZZ_DIR):
        return (f"{path}: fuzz keeps {FUZZ_DIR} for itself (a job's script runs from"
                f" {SCRIPT_PATH}); choose another path")
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot hold a container file (None: it can)."""
    if not path.startswith("/"):
        return f"must be an absolute path, not {path!r}"
    if ".." in path.split("/"):
        return f"{path!r} must not contain '..'"
    if path == "/":
        return "cannot place a file over '/'"
    normal = posixpath.normpath(path)
    if normal != path or path.startswith("//"):
        return f"{path!r} must be written in normal form ({'/' + normal.lstrip('/')!r})"
    for top in RESERVED_TOPS:
        if within(path, top):
            return f"{path} is under {top}, which the container runtime provides"
    return None


def overlaps(path: str, location: str) -> bool:
    """Whether a file at ``path`` and a mount (or file) at ``location`` collide: the one
    at or under the other."""
    return within(path, location) or within(location, path)
