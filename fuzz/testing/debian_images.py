"""Test images built from Debian packages with mmdebstrap and umoci, cached between runs.

:func:`debian_layout` turns a :class:`DebianRecipe` (packages, files to copy in,
mmdebstrap customize hooks) into an OCI layout (tag ``latest``) of one layer: a
minimal Debian root filesystem (``--variant=essential``, no Recommends, no manual
pages, documentation or translations) of the recipe's suite (Debian 12, ``bookworm``,
unless it names another) made by ``mmdebstrap`` from
``$FUZZ_DEBIAN_MIRROR`` (default deb.debian.org), which umoci wraps in an image.
The MPI images (:mod:`fuzz.testing.mpi_images`) and the Jupyter notebook image
(:mod:`fuzz.testing.jupyter_image`) are such recipes.

A build takes a minute or more and needs the Debian mirror; its layout is kept under
:func:`cache_root` in a folder named by the recipe's name and a hash of everything
that goes into it (suite, packages, hooks, the files' contents), so later runs reuse
it. A file lock per recipe name makes concurrent callers (pytest-xdist workers) build
it once. Entries are never removed here: delete the folder when no tests run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.testing.oci import MissingPartError, require, run_checked

SUITE = "bookworm"
MIRROR = os.environ.get("FUZZ_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BUILD_TIMEOUT = 1800.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXCLUDED = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
"""What dpkg leaves out of every image (``path-exclude``)."""


@dataclass(frozen=True)
class DebianRecipe:
    """What an image is made of.

    ``name`` names its cache entries and lock; ``packages`` are installed with their
    hard dependencies; ``files`` (a directory in the image: host files) are copied in
    before ``hooks`` run, each an mmdebstrap ``--customize-hook`` (``"$1"`` is the new
    root filesystem, ``chroot "$1" …`` runs a program inside it); ``suite`` is the
    Debian release they come from.
    """

    name: str
    packages: tuple[str, ...]
    hooks: tuple[str, ...] = ()
    files: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    suite: str = SUITE

    def key(self) -> str:
        """A hash of everything the image is built from: a change to any of it rebuilds."""
        contents = {directory: {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                                for path in paths}
                    for directory, paths in sorted(self.files.items())}
        recipe = {"suite": self.suite, "packages": list(self.packages), "hooks": list(self.hooks),
                  "excluded": list(EXCLUDED), "path": PATH, "files": contents}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DebianLayout:
    """A built image: its OCI layout, every package version in it, how long its build
    took and whether this call built it."""

    path: Path
    versions: dict[str, str]
    build_seconds: float
    built_now: bool


def cache_root() -> Path:
    """Where built images are kept: ``$FUZZ_TEST_IMAGE_CACHE``, else
    ``$XDG_CACHE_HOME/fuzz-test-images``, else ``~/.cache/fuzz-test-images``."""
    if os.environ.get("FUZZ_TEST_IMAGE_CACHE"):
        return Path(os.environ["FUZZ_TEST_IMAGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fuzz-test-images"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made if missing) while in the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_layout(recipe: DebianRecipe, cache: Path | None = None) -> DebianLayout:
    """The OCI layout of ``recipe``'s image, built if not cached.

    Raises :class:`MissingPartError` when a tool is missing or the build fails.
    """
    cache = cache or cache_root()
    entry = cache / f"{recipe.name}-{recipe.key()[:16]}"
    with _locked(cache / f"{recipe.name}.lock"):
        built_now = not (entry / "built.json").exists()
        if built_now:  # older entries stay: another checkout's tests may be using one
            _build(recipe, entry)
    record = json.loads((entry / "built.json").read_text())
    return DebianLayout(entry / "oci", record["versions"], record["build_seconds"], built_now)


def _build(recipe: DebianRecipe, entry: Path) -> None:
    """Build ``recipe``'s image into ``entry`` (made whole, then renamed into place)."""
    mmdebstrap = require("mmdebstrap", "mmdebstrap")
    umoci = require("umoci", "umoci")
    work = entry.with_name(f".{entry.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    rootfs, versions = work / "rootfs.tar", work / "versions.txt"
    copies = [hook for directory, paths in sorted(recipe.files.items()) for hook in (
        f'mkdir -p "$1"{directory}',
        f"copy-in {' '.join(str(path) for path in paths)} {directory}")]
    argv = [
        mmdebstrap, "--quiet", "--variant=essential", f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED),
        "--dpkgopt=force-unsafe-io",  # no fsync per file: a throwaway tree, made whole or not
        *(f"--customize-hook={hook}" for hook in (*copies, *recipe.hooks)),
        f"--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}} ${{Version}}\\n' "
        f"> {versions}",
        recipe.suite, str(rootfs), MIRROR,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise MissingPartError(
            f"mmdebstrap of the {recipe.name} image failed:\n{done.stderr[-3000:]}")
    image = f"{work / 'oci'}:latest"
    run_checked([umoci, "init", "--layout", str(work / "oci")])
    run_checked([umoci, "new", "--image", image])
    run_checked([umoci, "raw", "add-layer", "--image", image, str(rootfs)])
    run_checked([umoci, "config", "--image", image, "--config.cmd", "/bin/sh",
                 "--config.env", f"PATH={PATH}", "--config.workingdir", "/"])
    rootfs.unlink()
    installed = dict(line.split(" ", 1) for line in versions.read_text().splitlines() if line)
    record = {"name": recipe.name, "versions": installed,
              "build_seconds": round(time.monotonic() - began, 1)}
    (work / "built.json").write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(entry, ignore_errors=True)
    work.rename(entry)


def unpack_rootfs(layout: Path, destination: Path) -> Path:
    """Unpack ``layout``'s ``latest`` into ``destination`` (a new directory) with umoci,
    e.g. to run the same binaries on the host under ``chroot``; returns it."""
    umoci = require("umoci", "umoci")
    run_checked([umoci, "raw", "unpack", "--image", f"{layout}:latest", str(destination)])
    return destination
