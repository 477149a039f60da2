"""MPI test images built from Debian packages, cached between runs.

:func:`mpi_layout` returns an OCI layout (tag ``latest``) of a minimal Debian root
filesystem made by ``mmdebstrap`` with one MPI implementation (:data:`FLAVORS`). The
C programs of a source directory are compiled inside it by the image's own
``mpicc`` into ``/usr/local/bin/<name>``; then the compilers, the ``-dev`` packages
and every ssh/rsh client are removed, so the image holds what runs and nothing
that could start a remote shell (fuzz's multinode jobs must need none). umoci
turns the root filesystem into one layer.

A build takes a minute or so and needs the Debian mirror; its layout is kept under
:func:`cache_root` in a folder named by a hash of everything that goes into it
(suite, packages, build steps, sources), so later runs reuse it. A file lock per
flavor makes concurrent callers (pytest-xdist workers) build it once. Entries are
never removed here (about 70 MB each): delete the folder when no tests run.
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
from dataclasses import dataclass
from pathlib import Path

from fuzz.testing.oci import MissingPartError, require, run_checked

SUITE = "bookworm"
MIRROR = os.environ.get("FUZZ_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLCHAIN = ("gcc", "libc6-dev")  # what mpicc needs besides the implementation's -dev package
BUILD_TIMEOUT = 1800.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOURCE_DIR = "/usr/local/src/fuzz-mpi"
REMOTE_SHELLS = frozenset({
    "ssh", "sshd", "scp", "sftp", "slogin", "rsh", "rshd", "rlogin", "rcp", "dropbear",
    "dbclient", "lsh", "lshd",
})  # fmt: skip
"""Names of programs that start a remote shell: none may be in an image built here."""

# Hooks run by mmdebstrap on the host, "$1" being the new root filesystem.
_COMPILE = (
    f'for source in "$1"{SOURCE_DIR}/*.c; do name=$(basename "$source" .c); '
    f'chroot "$1" mpicc -O2 -Wall -o "/usr/local/bin/$name" "{SOURCE_DIR}/$name.c" || exit 1; done'
)
# openmpi-bin depends on openssh-client (or another ssh-client): it goes all the same,
# with the toolchain, by a forced purge that leaves those dependencies unmet on purpose.
_DROP = (
    "drop=$(chroot \"$1\" dpkg-query -W -f='${Package}\\n' | grep -E "
    "'^(gcc|g\\+\\+|cpp|gfortran)(-[0-9]+)?$|-dev$|^binutils|^lib(a|hwa|l|t|ub)san[0-9]+$"
    "|^openssh-|^rsh-|^dropbear|^lsh-'); "
    'chroot "$1" dpkg --purge --force-depends $drop'
)
_CHECK = (
    "found=$(find \"$1\" -xdev \\( "
    + " -o ".join(f"-name {name}" for name in sorted(REMOTE_SHELLS))
    + ' \\) -print); [ -z "$found" ] || { echo "remote shells left: $found" >&2; exit 1; }'
)
_EXCLUDED = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
_STEPS = (_COMPILE, _DROP, _CHECK, *_EXCLUDED)  # in the cache key: a changed step rebuilds


@dataclass(frozen=True)
class MpiFlavor:
    """One MPI implementation: its Debian packages and its launcher's name."""

    name: str
    packages: tuple[str, ...]
    launcher: str


FLAVORS = {
    "openmpi": MpiFlavor("openmpi", ("openmpi-bin", "libopenmpi-dev"), "mpirun"),
    "mpich": MpiFlavor("mpich", ("mpich", "libmpich-dev"), "mpiexec"),
}


@dataclass(frozen=True)
class MpiLayout:
    """A built image: its OCI layout, the programs in ``/usr/local/bin``, the package
    versions in it, how long its build took and whether this call built it."""

    flavor: MpiFlavor
    path: Path
    programs: tuple[str, ...]
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


def image_key(flavor: MpiFlavor, sources: Path) -> str:
    """A hash of everything an image is built from: a change to any of it rebuilds."""
    programs = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(sources.glob("*.c"))}
    recipe = {"suite": SUITE, "packages": [*flavor.packages, *TOOLCHAIN], "steps": _STEPS,
              "path": PATH, "programs": programs}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


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


def mpi_layout(flavor: str, sources: Path, cache: Path | None = None) -> MpiLayout:
    """The OCI layout of ``flavor``'s image with ``sources``' programs, built if not cached.

    Raises :class:`MissingPartError` when a tool is missing or the build fails.
    """
    chosen = FLAVORS[flavor]
    if not any(sources.glob("*.c")):
        raise MissingPartError(f"no C programs in {sources}")
    cache = cache or cache_root()
    key = image_key(chosen, sources)
    entry = cache / f"{flavor}-{key[:16]}"
    with _locked(cache / f"{flavor}.lock"):
        built_now = not (entry / "built.json").exists()
        if built_now:  # older entries stay: another checkout's tests may be using one
            _build(chosen, sources, entry)
    record = json.loads((entry / "built.json").read_text())
    return MpiLayout(chosen, entry / "oci", tuple(record["programs"]), record["versions"],
                     record["build_seconds"], built_now)


def _build(flavor: MpiFlavor, sources: Path, entry: Path) -> None:
    """Build ``flavor``'s image into ``entry`` (made whole, then renamed into place)."""
    mmdebstrap = require("mmdebstrap", "mmdebstrap")
    umoci = require("umoci", "umoci")
    work = entry.with_name(f".{entry.name}.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    rootfs, versions = work / "rootfs.tar", work / "versions.txt"
    argv = [
        mmdebstrap, "--quiet", "--variant=essential",
        f"--include={','.join((*flavor.packages, *TOOLCHAIN))}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDED),
        f'--customize-hook=mkdir -p "$1"{SOURCE_DIR}',
        f"--customize-hook=copy-in {' '.join(str(p) for p in sorted(sources.glob('*.c')))} "
        f"{SOURCE_DIR}",
        f"--customize-hook={_COMPILE}",
        f"--customize-hook={_DROP}",
        f"--customize-hook={_CHECK}",
        f"--customize-hook=chroot \"$1\" dpkg-query -W -f='${{Package}} ${{Version}}\\n' "
        f"> {versions}",
        SUITE, str(rootfs), MIRROR,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise MissingPartError(
            f"mmdebstrap of the {flavor.name} image failed:\n{done.stderr[-3000:]}")
    image = f"{work / 'oci'}:latest"
    run_checked([umoci, "init", "--layout", str(work / "oci")])
    run_checked([umoci, "new", "--image", image])
    run_checked([umoci, "raw", "add-layer", "--image", image, str(rootfs)])
    run_checked([umoci, "config", "--image", image, "--config.cmd", "/bin/sh",
                 "--config.env", f"PATH={PATH}", "--config.workingdir", "/"])
    rootfs.unlink()
    installed = dict(line.split(" ", 1) for line in versions.read_text().splitlines() if line)
    record = {
        "flavor": flavor.name,
        "programs": sorted(path.stem for path in sources.glob("*.c")),
        "versions": {name: installed[name] for name in flavor.packages if name in installed},
        "build_seconds": round(time.monotonic() - began, 1),
    }
    (work / "built.json").write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(entry, ignore_errors=True)
    work.rename(entry)


def unpack_rootfs(layout: Path, destination: Path) -> Path:
    """Unpack ``layout``'s ``latest`` into ``destination`` (a new directory) with umoci,
    e.g. to run the same binaries on the host under ``chroot``; returns it."""
    umoci = require("umoci", "umoci")
    run_checked([umoci, "raw", "unpack", "--image", f"{layout}:latest", str(destination)])
    return destination
