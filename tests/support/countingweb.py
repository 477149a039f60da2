"""An HTTP server for ingress tests that counts what it serves: GETs and body bytes.

:class:`Served` holds the files (each with a strong ETag, new on every ``put``) and
the counts; :func:`counting_handler` serves it (with
:func:`fuzz.testing.web.serve_handler`). The counts are the server's own, so a test
of "nothing fetched twice" does not rely on what the transfer says it did.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

CHUNK = 256 * 1024


@dataclass
class Served:
    """What a counting HTTP server holds and what it has served."""

    files: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0
    gets: int = 0
    pause: float = 0.0  # seconds between chunks of a body
    refuse_head: bool = False  # answer HEAD with 403
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, name: str, data: bytes) -> None:
        """Serve ``data`` at ``/name`` with a fresh strong ETag."""
        self.files[name] = data
        self.etags[name] = f'"{uuid.uuid4().hex}"'


def counting_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    """A handler class serving ``served``: HEAD and GET, ``pause`` between chunks."""
    class Handler(BaseHTTPRequestHandler):
        def _head(self) -> bytes | None:
            name = self.path.lstrip("/")
            data = served.files.get(name)
            if data is None:
                self.send_error(404)
                return None
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", served.etags[name])
            self.end_headers()
            return data

        def do_HEAD(self) -> None:
            if served.refuse_head:
                self.send_error(403)
                return
            self._head()

        def do_GET(self) -> None:
            data = self._head()
            if data is None:
                return
            with served.lock:
                served.gets += 1
            for start in range(0, len(data), CHUNK):
                chunk = data[start:start + CHUNK]
                self.wfile.write(chunk)
                with served.lock:
                    served.body_bytes += len(chunk)
                if served.pause:
                    time.sleep(served.pause)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read the counters."""

    return Handler
