"""A real orchestrator (``fuzz server``'s ``serve``) in a thread of the test, serving TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from fuzz.clients.iam import IamClient
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.fsutil import read_json
from fuzz.orchestrate.connect import CA_FILE, admin_token_path
from fuzz.orchestrate.datadir import init_data_dir
from fuzz.orchestrate.server import ServerSettings, serve
from fuzz.rpc.client import ClientTls
from fuzz.testing.oci import free_port


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Orchestrator:
    """A running orchestrator: its data dir, endpoint, CA (None: plain text), the admin token."""

    data_dir: Path
    endpoint: str
    ca: bytes | None
    admin_token: str

    @property
    def tls(self) -> ClientTls | None:
        """How clients verify it."""
        return ClientTls(self.ca) if self.ca is not None else None

    def client(self, token: str) -> OrchestratorClient:
        """The orchestrator API as the holder of ``token``."""
        return OrchestratorClient(self.endpoint, token, tls=self.tls)

    def iam(self, token: str) -> IamClient:
        """The IAM API as the holder of ``token``."""
        return IamClient(self.endpoint, token, tls=self.tls)

    def login(self, user: str) -> str:
        """A token of ``user``, from a login code the admin issues."""
        with self.iam(self.admin_token) as admin:
            code = admin.issue_login_code(user).code
        with self.iam("") as anonymous:
            return anonymous.login(code).token


@contextmanager
def running_orchestrator(data_dir: Path, settings: ServerSettings | None = None
                         ) -> Iterator[Orchestrator]:
    """Initialize ``data_dir`` and serve it on a free loopback port for the block.

    ``settings`` (its ``listen`` and ``data_dir`` are replaced) tunes the server.
    """
    init_data_dir(data_dir, "test")
    chosen = replace(settings or ServerSettings(listen="", data_dir=data_dir, cluster="test"),
                     listen=f"127.0.0.1:{free_port()}", data_dir=data_dir)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(chosen, stop))
    thread.start()
    try:
        wait_until("the server", lambda: read_json(data_dir / "server.json") is not None)
        endpoint = str((read_json(data_dir / "server.json") or {})["endpoint"])
        ca = None if chosen.insecure else (data_dir / CA_FILE).read_bytes()
        yield Orchestrator(data_dir, endpoint, ca, admin_token_path(data_dir).read_text().strip())
    finally:
        stop.set()
        thread.join(30)
