"""How the agent starts its small helper processes (the container monitor, exec's reaper).

A helper runs this checkout's ``fuzz`` with the standard library only (``python -S``:
no site-packages, so it starts fast and imports nothing heavy), with a minimal
environment.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import fuzz


def helper_command(code: str, *args: str) -> list[str]:
    """The argv that runs the Python statements ``code`` with ``args`` in ``sys.argv[1:]``."""
    return [sys.executable, "-S", "-c", code, *args]


def helper_env(*packages: str) -> dict[str, str]:
    """The environment of a helper: PATH, and where the fuzz package (and ``packages``) are.

    ``packages`` are the few third-party packages the helper imports later, off
    its start (the monitor's pyroute2); only their directories join its path.
    """
    paths = [str(Path(fuzz.__file__).resolve().parent.parent)]
    for name in packages:
        found = importlib.util.find_spec(name)
        if found is not None and found.origin is not None:
            directory = str(Path(found.origin).resolve().parent.parent)
            if directory not in paths:
                paths.append(directory)
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": os.pathsep.join(paths),
    }
