"""The Jupyter notebook test image, built from Debian's ``jupyter-notebook`` package.

:func:`jupyter_layout` returns an OCI layout (tag ``latest``) of a minimal Debian root
filesystem holding the classic Jupyter Notebook server (``jupyter-notebook``, which
brings ``python3-notebook`` and ``python3-ipykernel`` as hard dependencies; no
Recommends) and nothing else: no image comes from the internet. It is built and
cached by :mod:`fuzz.testing.debian_images` (the first build takes a few minutes
and needs the Debian mirror; later calls reuse it).

The image's command is ``/bin/sh``: a workflow starts the server itself, e.g.
``jupyter-notebook --no-browser --ip=127.0.0.1 --port=8888
--NotebookApp.base_url=$FB_ENDPOINT_PATH_JUPYTER`` (see examples/workflows/jupyter.fz).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fuzz.testing.debian_images import DebianRecipe, debian_layout

# usr-is-merged satisfies init-system-helpers' "usrmerge | usr-is-merged" (the root
# filesystem is merged already), but apt installs usrmerge too, which brings perl (about
# 50 MB): they go, and dpkg refuses (the build fails) if anything else needs them.
PACKAGES = ("jupyter-notebook", "python3-ipykernel", "usr-is-merged")
PERL = ("usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl", "libtext-glob-perl",
        "perl", "libperl5.36", "perl-modules-5.36")
# ipykernel's debugger (debugpy, pydevd) depends on gdb, used only to attach to a running
# process: gdb and the libraries only it uses go (about 25 MB), a dependency left unmet
# on purpose, as the MPI images' ssh client is.
DEBUGGER = ("gdb", "libbabeltrace1", "libipt2", "libsource-highlight4v5",
            "libsource-highlight-common", "libboost-regex1.74.0", "libdebuginfod1",
            "libdebuginfod-common")
_DROP = (f'chroot "$1" dpkg --purge {" ".join(PERL)} && '
         f'chroot "$1" dpkg --purge --force-depends {" ".join(DEBUGGER)}')
# Built with the image: the server and the Python kernel it starts must both run.
_CHECK = (
    'chroot "$1" jupyter-notebook --version >/dev/null && '
    'chroot "$1" python3 -c "import ipykernel, notebook"'
)
RECIPE = DebianRecipe("jupyter", PACKAGES, (_DROP, _CHECK))


@dataclass(frozen=True)
class JupyterLayout:
    """A built image: its OCI layout, the notebook server's Debian version, how long its
    build took and whether this call built it."""

    path: Path
    notebook_version: str
    build_seconds: float
    built_now: bool


def jupyter_layout(cache: Path | None = None) -> JupyterLayout:
    """The Jupyter image's OCI layout, built if not cached.

    Raises :class:`fuzz.testing.oci.MissingPartError` when a tool is missing or the
    build fails.
    """
    built = debian_layout(RECIPE, cache)
    return JupyterLayout(built.path, built.versions["jupyter-notebook"], built.build_seconds,
                         built.built_now)
