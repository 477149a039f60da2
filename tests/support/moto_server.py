"""Fixtures: moto's EC2 server on 127.0.0.1, and a front that can make EC2 calls fail or stall.

* ``moto_ec2`` -- a :class:`MotoEc2`: moto's ``ThreadedMotoServer`` (one per test
  session, reset for every test) with fake AWS credentials in the environment of
  the test and of every command it starts, and no ``~/.aws`` files. Moto's
  thousands of default AMIs are not loaded (``MOTO_EC2_LOAD_DEFAULT_AMIS``, or
  every reset costs seconds); moto does not check AMI ids, so :data:`AMI` serves.
* ``ec2_front`` -- an :class:`Ec2Front`: an HTTP proxy in front of that server
  that passes every call through, except that a test can make one EC2 action
  answer with an error in EC2's own XML shape (for errors moto never produces:
  quotas, capacity) or hold its answer back after moto has acted on it (to kill a
  client between the call and its answer).

Moto's own mechanisms are used where they exist: ``/moto-api/reset`` and
``/moto-api/reset-auth`` (which makes moto check credentials, so that unknown keys
get ``AuthFailure`` and keys without permission ``AccessDenied``).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
AMI = "ami-0123456789abcdef0"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}
ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>{request}</RequestID></Response>"
)


@dataclass(frozen=True)
class MotoEc2:
    """moto's server: its endpoint, clients for it, and its control API."""

    endpoint_url: str

    def client(self, service: str = "ec2") -> Any:
        """A boto3 client of ``service`` talking to moto directly, with the test credentials."""
        return _client(self.endpoint_url, service)

    def reset(self) -> None:
        """Forget every resource (POST /moto-api/reset)."""
        self._post("/moto-api/reset", b"")

    @contextlib.contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """Within: moto checks every request's credentials against its IAM users."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(self.endpoint_url + path, data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


@functools.cache
def _client(endpoint_url: str, service: str) -> Any:
    """Clients are kept: building one costs about a second."""
    return boto3.session.Session(
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    ).client(service, endpoint_url=endpoint_url, region_name=REGION)


@dataclass
class _Fault:
    code: str = ""
    status: int = 400
    message: str = ""
    hold: threading.Event | None = None


@dataclass
class Ec2Front:
    """A pass-through proxy to moto whose answers to chosen EC2 actions a test controls."""

    target: str
    url: str = ""
    faults: dict[str, _Fault] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def failing(self, action: str, code: str, message: str, status: int = 400
                ) -> Iterator[None]:
        """Within: ``action`` (e.g. ``RunInstances``) answers with EC2 error ``code``."""
        self.faults[action] = _Fault(code, status, message)
        try:
            yield
        finally:
            del self.faults[action]

    @contextlib.contextmanager
    def holding(self, action: str) -> Iterator[threading.Event]:
        """Within: ``action`` reaches moto, but its answer waits until the event is set."""
        release = threading.Event()
        self.faults[action] = _Fault(hold=release)
        try:
            yield release
        finally:
            release.set()
            del self.faults[action]


class _Handler(BaseHTTPRequestHandler):
    front: Ec2Front

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
        self.front.calls.append(action)
        fault = self.front.faults.get(action)
        if fault is not None and fault.code:
            self._answer(fault.status, {"Content-Type": "text/xml"}, ERROR_XML.format(
                code=fault.code, message=fault.message, request=uuid.uuid4()).encode())
            return
        target = urlsplit(self.front.target)
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        try:
            connection.request("POST", self.path, body, dict(self.headers.items()))
            answer = connection.getresponse()
            payload = answer.read()
        finally:
            connection.close()
        if fault is not None and fault.hold is not None:
            fault.hold.wait(60)
        headers = {k: v for k, v in answer.getheaders()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length")}
        with contextlib.suppress(OSError):  # the caller may have been killed meanwhile
            self._answer(answer.status, headers, payload)

    def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep quiet: the tests look at ``Ec2Front.calls`` instead."""


@pytest.fixture(scope="session")
def _ec2_servers() -> Iterator[tuple[MotoEc2, Ec2Front]]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    front = Ec2Front(f"http://{host}:{port}")
    handler = type("Handler", (_Handler,), {"front": front})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    front.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield MotoEc2(front.target), front
    finally:
        server.shutdown()
        server.server_close()
        moto.stop()


@pytest.fixture
def moto_ec2(_ec2_servers: tuple[MotoEc2, Ec2Front], tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> MotoEc2:
    """moto's EC2 (and IAM), empty, with fake credentials in the environment."""
    moto, front = _ec2_servers
    moto.reset()
    front.faults.clear()
    front.calls.clear()
    nowhere = tmp_path_factory.mktemp("no-aws-config")
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(Path(nowhere, "config")))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(Path(nowhere, "credentials")))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto


@pytest.fixture
def ec2_front(_ec2_servers: tuple[MotoEc2, Ec2Front], moto_ec2: MotoEc2) -> Ec2Front:
    """The front to moto's EC2 (reset with it); point ``endpoint_url`` at ``ec2_front.url``."""
    return _ec2_servers[1]
