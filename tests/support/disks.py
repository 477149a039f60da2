"""Small disks for tests of what a full disk does: a tmpfs of a given size, and filling it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(path: Path, size: str, mode: str = "0755") -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``8m``) mounted on ``path`` (made if missing), unmounted
    after (lazily: a container monitor's namespace may still hold it)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_up(directory: Path, name: str = "hog") -> Path:
    """Write a file in ``directory`` until its disk is full; returns the file."""
    hog = directory / name
    with open(hog, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
    return hog
