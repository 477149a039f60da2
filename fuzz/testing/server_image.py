"""The OCI image of ``fuzz server``, built with the local tools (mmdebstrap, umoci).

``deploy/image/image.yaml`` defines it (:class:`ImageDefinition`): its name, the Debian
packages, the entrypoint and environment; ``deploy/kubernetes/`` runs it. The build
(``make image``, :func:`build_server_image`) makes two layers:

1. the base, cached by :mod:`fuzz.testing.debian_images`: a minimal Debian root file
   system with ``python3`` and the wheels of fuzz's runtime dependencies at the
   versions this venv has (downloaded once from the package index into the cache,
   installed by Debian's pip, which is removed again);
2. fuzz itself, a wheel of the source tree unpacked into
   ``/usr/local/lib/python3.11/dist-packages`` by this venv's pip (fuzz is pure
   Python, and Debian bookworm's python3 is 3.11 like the venv's), compiled to byte
   code, plus the catalog renderer binary when it is built.

Only the second layer is made anew when fuzz changes, so a rebuild takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from fuzz.testing.debian_images import DebianRecipe, cache_root, debian_layout
from fuzz.testing.oci import MissingPartError, require, run_checked

SOURCE_ROOT = Path(__file__).resolve().parents[2]
DEFINITION_FILE = SOURCE_ROOT / "deploy" / "image" / "image.yaml"
PYTHON = (3, 11)
"""Debian 12's python3: wheels are fetched and fuzz is installed by a Python of the same."""
SITE_PACKAGES = f"usr/local/lib/python{PYTHON[0]}.{PYTHON[1]}/dist-packages"
WHEELS_DIR = "/tmp/fuzz-wheels"
PIP_PACKAGES = ("python3-pip", "python3-setuptools", "python3-wheel", "python3-pkg-resources")
"""Debian's pip and what it pulls in: in the image while the wheels install, then purged."""
DOWNLOAD_TIMEOUT = 900.0


@dataclass(frozen=True)
class ImageDefinition:
    """``deploy/image/image.yaml``: what the image is called, holds and runs."""

    name: str
    packages: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str]

    @classmethod
    def load(cls, path: Path = DEFINITION_FILE) -> ImageDefinition:
        """Read the definition file."""
        data = yaml.safe_load(path.read_text())
        return cls(data["name"], tuple(data["packages"]), tuple(data["entrypoint"]),
                   tuple(data["cmd"]), {str(k): str(v) for k, v in data["env"].items()})

    def reference(self) -> str:
        """``NAME:VERSION``, the version being this fuzz's."""
        return f"{self.name}:{metadata.version('fuzz')}"


@dataclass(frozen=True)
class ServerImage:
    """A built image: its OCI layout, tag, and the seconds each layer took (0 when cached)."""

    layout: Path
    tag: str
    reference: str
    base_seconds: float
    fuzz_seconds: float


def runtime_requirements(distribution: str = "fuzz") -> list[str]:
    """``NAME==VERSION`` of every package ``distribution`` needs at run time (its
    dependencies and theirs, with the extras they ask of each other, such as
    ``psycopg[binary]``'s driver; not ``distribution``'s own optional extras), at the
    versions installed here."""
    pinned: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(distribution, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                continue
            key = requirement.name.lower().replace("_", "-")
            pinned.setdefault(key, metadata.version(requirement.name))
            wanted = (requirement.name, frozenset(requirement.extras))
            if wanted not in seen:
                seen.add(wanted)
                pending.append(wanted)
    return sorted(f"{name}=={version}" for name, version in pinned.items())


def dependency_wheels(requirements: list[str], cache: Path) -> tuple[Path, ...]:
    """The wheels of ``requirements`` for this Python and platform, downloaded once
    into the cache (keyed by the requirement list) by pip."""
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    folder = cache / f"fuzz-server-wheels-{digest}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", str(folder), *requirements],
            capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False)
        if done.returncode != 0:
            raise MissingPartError(f"pip download of fuzz's dependencies failed:\n"
                                   f"{done.stderr[-3000:]}")
        (folder / "done").write_text("\n".join(requirements) + "\n")
    return tuple(sorted(folder.glob("*.whl")))


def base_recipe(definition: ImageDefinition, wheels: tuple[Path, ...]) -> DebianRecipe:
    """The first layer: Debian, python3 and the dependency wheels, installed by Debian's
    pip, which then goes with the wheels."""
    install = (f"chroot \"$1\" sh -c 'python3 -m pip install --quiet --no-index --no-deps "
               f"--break-system-packages --root-user-action=ignore {WHEELS_DIR}/*.whl'")
    purge = (f'chroot "$1" dpkg --purge {" ".join(PIP_PACKAGES)} && '
             f'rm -rf "$1"{WHEELS_DIR} "$1"/root/.cache')
    return DebianRecipe("fuzz-server-base", (*definition.packages, *PIP_PACKAGES),
                        (install, purge), {WHEELS_DIR: wheels})


def _fuzz_layer(source: Path, work: Path) -> Path:
    """A layer tar of fuzz's own wheel unpacked into the image's site packages."""
    wheel_dir, stage = work / "wheel", work / "stage"
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(wheel_dir), str(source)]
    run_checked(argv)
    run_checked([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                 "--no-compile", "--target", str(stage / SITE_PACKAGES),
                 *map(str, wheel_dir.glob("fuzz-*.whl"))])
    shutil.rmtree(stage / SITE_PACKAGES / "bin", ignore_errors=True)  # the venv's scripts
    # byte code checked by the source's hash, not its time (the layer's times are 0): the
    # read-only root keeps Python from writing it at each start
    run_checked([sys.executable, "-m", "compileall", "-q", "--invalidation-mode",
                 "checked-hash", "-s", str(stage), "-p", "/", str(stage / SITE_PACKAGES)])
    renderer = source / "fuzz" / "catalog" / "bin" / "fuzz-render"
    if renderer.exists():
        target = stage / SITE_PACKAGES / "fuzz" / "catalog" / "bin"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(renderer, target)
    layer = work / "fuzz-layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(stage, arcname=".", filter=_owned_by_root)
    return layer


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    member.mtime = 0  # the same source makes the same layer
    return member


def build_server_image(output: Path, source: Path = SOURCE_ROOT,
                       definition: ImageDefinition | None = None,
                       cache: Path | None = None) -> ServerImage:
    """Build the image into the OCI layout ``output`` (replaced), tagged with fuzz's
    version; raises :class:`MissingPartError` when a tool is missing or a step fails."""
    if sys.version_info[:2] != PYTHON:
        raise MissingPartError(f"build the image with Python {PYTHON[0]}.{PYTHON[1]}, the "
                               "image's, whose wheels it installs (this is "
                               f"{sys.version_info[0]}.{sys.version_info[1]})")
    definition = definition or ImageDefinition.load()
    cache = cache or cache_root()
    umoci = require("umoci", "umoci")
    base = debian_layout(base_recipe(definition, dependency_wheels(runtime_requirements(),
                                                                    cache)), cache)
    began = time.monotonic()
    shutil.rmtree(output, ignore_errors=True)
    shutil.copytree(base.path, output)
    tag = definition.reference().rpartition(":")[2]
    image = f"{output}:{tag}"
    run_checked([umoci, "tag", "--image", f"{output}:latest", tag])
    run_checked([umoci, "rm", "--image", f"{output}:latest"])
    with tempfile.TemporaryDirectory(prefix="fuzz-image-") as work:
        run_checked([umoci, "raw", "add-layer", "--image", image,
                     str(_fuzz_layer(source, Path(work)))])
    config = [umoci, "config", "--image", image, "--clear=config.cmd",
              "--clear=config.entrypoint", "--config.workingdir", "/",
              *(f"--config.entrypoint={part}" for part in definition.entrypoint),
              *(f"--config.cmd={part}" for part in definition.cmd),
              *(f"--config.env={key}={value}" for key, value in definition.env.items())]
    run_checked(config)
    run_checked([umoci, "gc", "--layout", str(output)])
    return ServerImage(output, tag, definition.reference(),
                       base.build_seconds if base.built_now else 0.0,
                       round(time.monotonic() - began, 1))


def main() -> None:
    """``python -m fuzz.testing.server_image [OUTPUT]`` (``make image``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=Path("build/image/fuzz-server"))
    arguments = parser.parse_args()
    try:
        built = build_server_image(arguments.output.resolve())
    except MissingPartError as exc:
        sys.exit(f"fuzz: {exc}")
    print(f"{built.reference}: OCI layout {built.layout} (tag {built.tag}); base layer "
          f"{built.base_seconds:.1f} s (0: cached), fuzz layer {built.fuzz_seconds:.1f} s")


if __name__ == "__main__":
    main()
