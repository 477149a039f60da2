"""A fake warewulfd REST API (``/api/nodes``, ``/api/power``) over :mod:`fake_warewulf`.

Served on 127.0.0.1 by the stdlib's ThreadingHTTPServer. It answers as warewulfd
4.6.1+ does (JSON bodies in nodes.conf field names; errors as ``{"error": ...,
"status": ...}``) and refuses what it refuses: a wrong or missing Basic
authorization (401), unknown paths (404, ``404 page not found``), wrong methods
(405), bodies that are not JSON or lack the required ``node`` (or ``state``)
field (400), and everything :class:`FakeWarewulf` rejects.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

from tests.support.fakes.fake_warewulf import FakeWarewulf, WarewulfError

STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND",
                500: "INTERNAL"}
Route = Callable[["FakeWarewulfApi", dict[str, str], Any], Any]


def _body(data: Any, field: str) -> Any:
    if not isinstance(data, dict) or field not in data:
        raise WarewulfError(f"missing required field: {field}")
    return data[field]


def _node_fields(data: Any) -> dict[str, Any]:
    fields = _body(data, "node")
    if not isinstance(fields, dict):
        raise WarewulfError("node: expected a JSON object")
    return fields


class FakeWarewulfApi:
    """The server: ``url`` once started; ``password`` may change (credential rotation)."""

    ROUTES: ClassVar[list[tuple[str, re.Pattern[str], Route]]] = [
        ("GET", re.compile(r"^/api/nodes/?$"), lambda api, m, b: api.ww.nodes()),
        ("GET", re.compile(r"^/api/nodes/(?P<id>[^/]+)$"),
         lambda api, m, b: api.ww.node(m["id"])),
        ("PUT", re.compile(r"^/api/nodes/(?P<id>[^/]+)$"),
         lambda api, m, b: api.ww.add(m["id"], _node_fields(b))),
        ("PATCH", re.compile(r"^/api/nodes/(?P<id>[^/]+)$"),
         lambda api, m, b: api.ww.update(m["id"], _node_fields(b))),
        ("DELETE", re.compile(r"^/api/nodes/(?P<id>[^/]+)$"),
         lambda api, m, b: api.ww.delete(m["id"])),
        ("POST", re.compile(r"^/api/nodes/(?P<id>[^/]+)/overlays/build$"),
         lambda api, m, b: api.ww.build_overlays([m["id"]])[0]),
        ("GET", re.compile(r"^/api/power/(?P<id>[^/]+)$"),
         lambda api, m, b: [{"node_id": m["id"], "bmc_ip": api.ww.bmc(m["id"]),
                             "result": api.ww.power_state(m["id"])}]),
        ("POST", re.compile(r"^/api/power/(?P<id>[^/]+)$"),
         lambda api, m, b: [{"node_id": m["id"],
                             "bmc_ip": api.ww.power(m["id"], str(_body(b, "state")))}]),
    ]

    def __init__(self, ww: FakeWarewulf, user: str, password: str) -> None:
        """Serve ``ww`` to ``user`` with ``password``; call :meth:`start`."""
        self.ww = ww
        self.user = user
        self.password = password
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read api.requests instead."""

            def _answer(self) -> None:
                api.requests.append((self.command, self.path))
                status, payload = api.handle(self.command, self.path,
                                             self.headers.get("Authorization", ""),
                                             self.rfile.read(int(self.headers.get(
                                                 "Content-Length") or 0)))
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, bytes)
                                 else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def handle(self, method: str, path: str, authorization: str, raw: bytes) -> tuple[int, Any]:
        """Route one request: (status, JSON payload or raw bytes)."""
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "unauthorized", "status": STATUS_NAMES[401]}
        path = path.split("?", 1)[0]
        allowed = [m for m, pattern, _ in self.ROUTES if pattern.match(path)]
        if not allowed:
            return 404, b"404 page not found\n"
        if method not in allowed:
            return 405, b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return 400, {"error": "failed to decode json", "status": STATUS_NAMES[400]}
        for route_method, pattern, route in self.ROUTES:
            match = pattern.match(path)
            if route_method == method and match:
                groups = {k: unquote(v) for k, v in match.groupdict().items()}
                try:
                    return 200, route(self, groups, body)
                except WarewulfError as exc:
                    name = STATUS_NAMES.get(exc.status, "INTERNAL")
                    return exc.status, {"error": f"{name.lower().replace('_', ' ')}: {exc}",
                                        "status": name}
        return 405, b""

