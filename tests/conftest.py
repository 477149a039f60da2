"""Fixtures shared by many test modules. Keep this file small and generic.

The fixtures of the helper modules in ``tests/support/`` are imported here, so that
every test in every layer folder (``tests/engine``, ``tests/e2e`` ...) reaches them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.fakes.fixtures import azure_api, gcp_api  # noqa: F401  (fixtures)
from tests.support.fakes.warewulf_site import warewulf_api, warewulf_site  # noqa: F401  (fixtures)
from tests.support.jupyterimages import (  # noqa: F401  (fixtures)
    jupyter_image,
    jupyter_notebook_layout,
)
from tests.support.moto_s3 import moto_s3  # noqa: F401  (fixture)
from tests.support.moto_server import _ec2_servers, ec2_front, moto_ec2  # noqa: F401  (fixtures)
from tests.support.mpiimages import (  # noqa: F401  (fixtures)
    mpich_image,
    mpich_layout,
    openmpi_image,
    openmpi_layout,
)
from tests.support.registry import (  # noqa: F401  (fixtures)
    auth_busybox_image,
    auth_registry,
    busybox_image,
    busybox_layout,
    registry,
)
from tests.support.servers import moto_server, postgres  # noqa: F401  (fixtures)
from tests.support.sif import busybox_sif, sif_image  # noqa: F401  (fixtures)
from tests.support.stores import pg_target, store_target  # noqa: F401  (fixtures)


def pid_gone(pid: int) -> bool:
    """True once no process (not even a zombie) has ``pid``."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def assert_pid_gone() -> Callable[..., None]:
    """Return ``check(pid, timeout=5.0)``, failing unless ``/proc/<pid>`` disappears in time."""

    def check(pid: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pid_gone(pid):
            if time.monotonic() > deadline:
                pytest.fail(f"process {pid} still exists after {timeout}s")
            time.sleep(0.02)

    return check


def _processes_using(base: Path) -> list[str]:
    """Processes whose command line or open files name a path under ``base``."""
    found = []
    prefix = str(base)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if prefix in argv or any(f.startswith(prefix) for f in files):
            found.append(f"pid {proc.name}: {argv.strip()[:160]}")
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session: no agent, container monitor or server a test started still runs."""
    yield
    base = tmp_path_factory.getbasetemp()
    deadline = time.monotonic() + 10
    while (left := _processes_using(base)) and time.monotonic() < deadline:
        time.sleep(0.2)  # a monitor told to stop may still be exiting
    assert not left, "tests left processes running:\n" + "\n".join(left)
