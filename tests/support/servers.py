"""Fixtures: real servers on 127.0.0.1 for the shared state backends (and anyone else).

* ``moto_server`` -- moto's S3/KMS server (its WSGI app under werkzeug, as
  ``ThreadedMotoServer`` runs it) on a random port, with fake AWS credentials in
  the environment of the test process and of every command it starts.
* ``postgres`` -- a PostgreSQL from Debian's package (fuzz/testing/postgres.py, which
  bench/control_plane.py starts too): ``initdb`` in a temporary
  directory, trust authentication, 127.0.0.1 on a random port, stopped at the end.
  PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.

A missing part fails the fixture with the command that installs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from fuzz.testing.postgres import Postgres as Postgres
from fuzz.testing.postgres import PostgresStartError, running_postgres

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1, trust authentication, for the whole session."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres())
        except PostgresStartError as exc:
            pytest.fail(str(exc))
        yield server
