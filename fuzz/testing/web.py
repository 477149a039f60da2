"""A static HTTP server for tests and the demo: files to ingress from, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test and demo output clean."""


@contextlib.contextmanager
def serve_handler(handler: Callable[..., http.server.BaseHTTPRequestHandler],
                  port: int = 0) -> Iterator[int]:
    """Serve HTTP with ``handler`` on 127.0.0.1:``port`` (0: any free one), on a thread of
    its own; yields the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_directory(root: Path, port: int = 0) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1:``port`` (0: any free one); yields the base URL."""
    with serve_handler(functools.partial(_QuietHandler, directory=str(root)), port) as bound:
        yield f"http://127.0.0.1:{bound}"


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""An opener that never goes through a proxy (the tests' servers are on loopback)."""


def plain_get(url: str) -> tuple[int, str]:
    """The status and body of a GET of ``url`` (0 and the reason when nothing answers)."""
    try:
        with DIRECT.open(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)
