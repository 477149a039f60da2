"""MPI test images built from Debian packages, cached between runs.

:func:`mpi_layout` returns an OCI layout (tag ``latest``) of a minimal Debian root
filesystem with one MPI implementation (:data:`FLAVORS`), built and cached by
:mod:`fuzz.testing.debian_images`. The C programs of a source directory are compiled
inside it by the image's own ``mpicc`` into ``/usr/local/bin/<name>``; then the
compilers, the ``-dev`` packages and every ssh/rsh client are removed, so the image
holds what runs and nothing that could start a remote shell (fuzz's multinode jobs
must need none). About 70 MB each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fuzz.testing.debian_images import SUITE, DebianRecipe, debian_layout
from fuzz.testing.oci import MissingPartError

TOOLCHAIN = ("gcc", "libc6-dev")  # what mpicc needs besides the implementation's -dev package
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


@dataclass(frozen=True)
class MpiFlavor:
    """One MPI implementation: its Debian packages, its launcher's name and the Debian
    release the packages come from.

    MPICH's is Debian 13's (4.2.1, UCX 1.18): Debian 12's MPICH 4.0.2 over UCX 1.13 can
    hang in ``MPI_Finalize`` when its ranks truly run in parallel (a rank's endpoint
    flush waits on a peer that has already finished its own; docs/reliability.md).
    """

    name: str
    packages: tuple[str, ...]
    launcher: str
    suite: str = SUITE


FLAVORS = {
    "openmpi": MpiFlavor("openmpi", ("openmpi-bin", "libopenmpi-dev"), "mpirun"),
    "mpich": MpiFlavor("mpich", ("mpich", "libmpich-dev"), "mpiexec", "trixie"),
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


def mpi_layout(flavor: str, sources: Path, cache: Path | None = None) -> MpiLayout:
    """The OCI layout of ``flavor``'s image with ``sources``' programs, built if not cached.

    Raises :class:`MissingPartError` when a tool is missing or the build fails.
    """
    chosen = FLAVORS[flavor]
    programs = tuple(sorted(sources.glob("*.c")))
    if not programs:
        raise MissingPartError(f"no C programs in {sources}")
    recipe = DebianRecipe(flavor, (*chosen.packages, *TOOLCHAIN), (_COMPILE, _DROP, _CHECK),
                          {SOURCE_DIR: programs}, chosen.suite)
    built = debian_layout(recipe, cache)
    versions = {name: built.versions[name] for name in chosen.packages if name in built.versions}
    return MpiLayout(chosen, built.path, tuple(path.stem for path in programs), versions,
                     built.build_seconds, built.built_now)
