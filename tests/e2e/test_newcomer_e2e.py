"""The newcomer's first hour, in CI: clone the repository, `make demo` twice in a row while
another process holds port 5000 (a registry that is not ours), then `make demo-destroy`.
The demo's Jupyter notebook service answers at the URL it printed, through the endpoint
gateway: a 302 to the sign-in page without a cookie, a 200 with the admin's token.
The Jupyter image comes from the machine's image cache (``$FUZZ_TEST_IMAGE_CACHE`` is
passed on, the one the suite's own Jupyter tests use): built at most once.

The clone is of this checkout's committed HEAD (in CI, a clean clone: the same thing).
Its virtualenv is a copy of the one running this suite (hard links, where one file
system allows) without this checkout's own editable installs, and the clone's
`make` installs its own code into it with ``PIP_FLAGS="--no-index --no-deps
--no-build-isolation"``: the Makefile's own venv, proto and apt steps run, only pip's
downloads are left out (CI's `make test` did them from its clean clone already).
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.endpoints import Browser, ca_context

ROOT = Path(__file__).resolve().parents[2]
HELD_PORT = 5000
PIP_FLAGS = "--no-index --no-deps --no-build-isolation"
MAKE_TIMEOUT = 900  # the first demo may build the Jupyter image (3.5-5 minutes cold)
KEPT = ("FUZZ_TEST_IMAGE_CACHE",)  # the image cache: the Jupyter image is built once


class _OtherRegistry(http.server.BaseHTTPRequestHandler):
    """Answers every request 200, as a registry that is not the demo's; records each one."""

    requests: list[str] = []  # noqa: RUF012 - the one server of this module writes it

    def _answer(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def port_held(port: int) -> Iterator[list[str] | None]:
    """Another process's registry on ``port`` (yields what it was asked), or None where
    something else holds the port already (held all the same)."""
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _OtherRegistry)
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE, exc
        yield None
        return
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _OtherRegistry.requests
    finally:
        server.shutdown()
        server.server_close()


def copy_venv(source: Path, target: Path) -> None:
    """``source`` (a venv) at ``target``, without the editable installs of its checkout."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link)
    for site in target.glob("lib/python3*/site-packages"):
        for entry in site.iterdir():
            direct_url = entry / "direct_url.json"
            if entry.name.startswith("__editable__"):
                entry.unlink()
            elif direct_url.exists() and json.loads(direct_url.read_text()).get(
                    "dir_info", {}).get("editable"):
                shutil.rmtree(entry)


def make(clone: Path, target: str) -> subprocess.CompletedProcess[str]:
    """``make TARGET`` in the clone, as a newcomer types it."""
    env = {key: value for key, value in os.environ.items() if key in KEPT
           or not key.startswith(("FUZZ_", "DEMO_", "VIRTUAL_ENV", "PYTEST", "MAKE"))}
    return subprocess.run(["make", target, f"PIP_FLAGS={PIP_FLAGS}"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=MAKE_TIMEOUT)


def check_jupyter_url(clone: Path, stdout: str) -> None:
    """The notebook's URL the demo printed answers through the gateway: a 302 to the
    sign-in page without a cookie, Jupyter's own API with the admin's token."""
    found = re.search(r"Jupyter is READY: open (https://\S+)", stdout)
    assert found, stdout[-4000:]
    url = urllib.parse.urlsplit(found.group(1))
    assert url.hostname == "127.0.0.1" and url.port is not None, url
    server = clone / ".demo" / ".fuzz" / "server"
    browser = Browser(url.hostname, url.port, ca_context(server / "ca.pem"))
    anonymous = browser.request("GET", url.path)
    assert anonymous.status == 302, anonymous
    assert anonymous.headers["Location"].startswith("/_fuzz/sign-in?next="), anonymous.headers
    token = (server / "admin.token").read_text().strip()
    api = browser.request("GET", url.path + "api/status",
                          headers={"Authorization": f"Bearer {token}"})
    assert api.status == 200 and "kernels" in api.json(), api


def test_a_fresh_clone_runs_the_demo_twice_beside_a_busy_port_5000(tmp_path: Path) -> None:
    clone = tmp_path / "fuzz"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    copy_venv(Path(sys.prefix), clone / ".venv")
    try:
        with port_held(HELD_PORT) as asked:
            first = make(clone, "demo")
            assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
            second = make(clone, "demo")
            assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        for run in (first, second):
            assert "Traceback" not in run.stdout + run.stderr
            assert "words=18 lines=3" in run.stdout
            assert "fuzz notebook" in run.stdout  # the page, through port-forward
            assert "Sign in on its page with this one-time login code: " in run.stdout
        check_jupyter_url(clone, second.stdout)  # the second run's: the gateway's port
        ports = json.loads((clone / ".demo" / "ports.json").read_text())
        assert HELD_PORT not in ports.values()
        assert f"ports {ports['orchestrator']} (orchestrator)" in second.stdout  # the same
        if asked is not None:
            assert asked == [], f"the demo talked to the registry on port 5000: {asked}"
    finally:
        destroyed = make(clone, "demo-destroy")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "Destroy complete! Resources: 0 added, 0 changed, 3 destroyed." in destroyed.stdout
    assert "orchestrator stopped" in destroyed.stdout
    with socket.socket() as sock:  # the orchestrator's port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", ports["orchestrator"]))
