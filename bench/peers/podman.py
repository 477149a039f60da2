"""The podman peer: ``podman run --rm`` of an image from the bench's local registry.

Installs Debian's podman (4.3 on Debian 12) on first use (through
``scripts/install-system-packages.sh``), and gives every run its own storage and
run-state folders in a temporary folder, removed after, so nothing is left in
``/var/lib/containers`` and the machine's own podman is not touched. podman uses
runc, as fuzz's agents do, cgroupfs (no systemd here) and the host's network, as the
bare ``runc run`` bundle of the benches does (they have no network namespace
either), so the figure is podman's own cost over runc's.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fuzz.substrate.runtime.bundle import NOFILE_LIMIT

PACKAGES = ("podman",)
NPROC = 4096
INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "install-system-packages.sh"


def ensure_installed() -> None:
    """Install podman unless it is there."""
    if shutil.which("podman") is None:
        subprocess.run([str(INSTALLER), *PACKAGES], check=True)


@dataclass(frozen=True)
class PodmanPeer:
    """podman with storage of its own: how to call it."""

    root: Path
    runroot: Path

    def podman(self, *args: str) -> list[str]:
        """The argv of ``podman`` on this peer's storage with ``args``."""
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "none", *args]

    def pull(self, image: str) -> None:
        """Pull ``image`` from the local (plain HTTP) registry."""
        done = subprocess.run(self.podman("pull", "--quiet", "--tls-verify=false", image),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SystemExit(f"podman pull {image} failed: {done.stderr.strip()[-500:]}")

    def run(self, image: str, command: Sequence[str] = ("/bin/true",)) -> tuple[float, str]:
        """Seconds for one ``podman run --rm`` of ``command`` in ``image``, and its stdout."""
        started = time.perf_counter()
        done = subprocess.run(
            self.podman("run", "--rm", "--network=host", *_host_ulimits(), "--tls-verify=false",
                        image, *command),
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"podman run failed ({done.returncode}): "
                             f"{done.stderr.strip()[-500:]}")
        return elapsed, done.stdout


def _host_ulimits() -> list[str]:
    """``--ulimit`` flags in place of podman's defaults (a million open files, four million
    processes), which this host does not let even root set: the open-files limit of the
    benches' bare runc bundle (this process's hard limit), and a process limit far above
    what one job needs."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    return [f"--ulimit=nofile={nofile}:{nofile}", f"--ulimit=nproc={NPROC}:{NPROC}"]


@contextmanager
def podman() -> Iterator[PodmanPeer]:
    """A podman with its own storage in a temporary folder, removed after (with whatever
    containers and layers are still mounted there)."""
    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-podman-"))
    peer = PodmanPeer(workdir / "root", workdir / "run")
    try:
        yield peer
    finally:
        subprocess.run(peer.podman("rm", "--all", "--force"), capture_output=True,
                       stdin=subprocess.DEVNULL)
        # Unmounts the storage's overlay layers, which rmtree alone could not remove.
        subprocess.run(peer.podman("system", "reset", "--force"), capture_output=True,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)
