"""A throwaway PostgreSQL server on 127.0.0.1, for tests (tests/support/servers.py) and benches.

Debian's PostgreSQL: ``initdb`` in a temporary directory, trust authentication, a free
port of 127.0.0.1, durability off (fsync, synchronous commit: a test database is thrown
away), stopped and deleted at the end. PostgreSQL refuses to run as root, so as root it
runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fuzz.errors import FuzzError
from fuzz.testing.oci import free_port

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_POSTGRES = "install postgresql (apt-get install postgresql)"


class PostgresStartError(FuzzError):
    """PostgreSQL is missing, or would not start (the message says why, with its log)."""


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server."""

    host: str
    port: int
    user: str

    @property
    def conninfo(self) -> str:
        """A libpq connection string for the ``postgres`` database."""
        return f"host={self.host} port={self.port} user={self.user} dbname=postgres"

    def url(self, database: str) -> str:
        """The store URL of ``database`` here (trust authentication: no password)."""
        return f"postgres://{self.user}@{self.host}:{self.port}/{database}"


def _postgres_bin() -> Path:
    found = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name))
    if not found or not Path(found[-1], "initdb").exists():
        raise PostgresStartError(f"PostgreSQL is not installed: {INSTALL_POSTGRES}")
    return Path(found[-1])


def _as_server_user(argv: list[str]) -> list[str]:
    """As root: run ``argv`` as the ``postgres`` user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresStartError("runuser is missing: install util-linux "
                                 "(apt-get install util-linux)")
    return [runuser, "-u", "postgres", "--", *argv]


@contextmanager
def running_postgres(max_connections: int = 200) -> Iterator[Postgres]:
    """A fresh PostgreSQL server for the block; PostgresStartError if it cannot start."""
    bindir = _postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data, log = workdir / "data", workdir / "server.log"
    port = free_port()

    def run(*argv: str | Path) -> None:
        proc = subprocess.run(_as_server_user([str(a) for a in argv]), capture_output=True,
                              text=True, timeout=120, cwd=workdir)
        if proc.returncode != 0:
            details = proc.stderr.strip() or proc.stdout.strip()
            if log.exists():
                details += "\n" + log.read_text()[-2000:]
            raise PostgresStartError(f"{Path(argv[0]).name} failed: {details}")

    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync", "--no-instructions")
        options = (f"-h 127.0.0.1 -p {port} -k {workdir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off "
                   f"-c max_connections={max_connections}")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        try:
            yield Postgres("127.0.0.1", port, "postgres")
        finally:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                            "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60, cwd=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
