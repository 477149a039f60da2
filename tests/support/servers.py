"""Fixtures: real servers on 127.0.0.1 for the shared state backends (and anyone else).

* ``moto_server`` -- moto's S3/KMS server (its WSGI app under werkzeug, as
  ``ThreadedMotoServer`` runs it) on a random port, with fake AWS credentials in
  the environment of the test process and of every command it starts.
* ``postgres`` -- a PostgreSQL from Debian's package: ``initdb`` in a temporary
  directory, trust authentication, 127.0.0.1 on a random port, stopped at the end.
  PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.

A missing part fails the fixture with the command that installs it.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from fuzz.testing.oci import free_port

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_POSTGRES = "install postgresql (apt-get install postgresql)"


def _one_request_at_a_time(app: WSGIApplication) -> WSGIApplication:
    """Serialise requests to ``app``.

    S3 applies a conditional write (``IfMatch``, ``IfNoneMatch``) atomically; moto
    checks the condition and then writes, so two concurrent requests could both
    pass. Handling one request at a time gives the test server S3's guarantee.
    """
    mutex = threading.Lock()

    def serialised(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with mutex:
            return list(app(environ, start_response))

    return serialised


@dataclass(frozen=True)
class MotoServer:
    """A running moto server."""

    endpoint_url: str

    def client(self, service: str) -> Any:
        """A boto3 client of ``service`` talking to this server."""
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint_url, region_name=AWS_ENV["AWS_DEFAULT_REGION"]
        )

    def new_bucket(self, versioned: bool = False) -> str:
        """Create a bucket with a unique name (versioning on if asked) and return its name."""
        name = f"fuzz-{uuid.uuid4().hex[:12]}"
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": "Enabled"})
        return name


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server on 127.0.0.1 for the whole session, AWS credentials set to fakes."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    saved = {name: os.environ.get(name) for name in AWS_ENV}
    os.environ.update(AWS_ENV)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, _one_request_at_a_time(app), threaded=True,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def _postgres_bin() -> Path:
    found = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name))
    if not found or not Path(found[-1], "initdb").exists():
        pytest.fail(f"PostgreSQL is not installed: {INSTALL_POSTGRES}")
    return Path(found[-1])


def _as_server_user(argv: list[str]) -> list[str]:
    """As root: run ``argv`` as the ``postgres`` user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("runuser is missing: install util-linux (apt-get install util-linux)")
    return [runuser, "-u", "postgres", "--", *argv]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1, trust authentication, for the whole session."""
    bindir = _postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data, log = workdir / "data", workdir / "server.log"
    port = free_port()

    def run(*argv: str) -> None:
        proc = subprocess.run(_as_server_user([str(a) for a in argv]), capture_output=True,
                              text=True, timeout=120, cwd=workdir)
        if proc.returncode != 0:
            details = proc.stderr.strip() or proc.stdout.strip()
            if log.exists():
                details += "\n" + log.read_text()[-2000:]
            pytest.fail(f"{Path(argv[0]).name} failed: {details}")

    run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
        "--no-sync", "--no-instructions")
    options = (f"-h 127.0.0.1 -p {port} -k {workdir} -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200")
    run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
    try:
        yield Postgres("127.0.0.1", port, "postgres")
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60, cwd=workdir)
        shutil.rmtree(workdir, ignore_errors=True)
