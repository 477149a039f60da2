"""A small JSON API server on 127.0.0.1 for the fake cloud APIs.

The fakes (:mod:`fakes.gcp_compute`, :mod:`fakes.azure_arm`) are plain objects that
turn a :class:`Request` into a :class:`Response`; :class:`ApiServer` carries them
over HTTP (or HTTPS) with the standard library's ThreadingHTTPServer, so that the
real SDKs talk to them over real sockets. :class:`Router` maps method and path
patterns to handlers.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

JSON_TYPE = "application/json; charset=UTF-8"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the fakes see it: the path, its query and the raw body."""

    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes

    def header(self, name: str) -> str:
        """A request header, or '' when absent."""
        return str(self.headers.get(name, ""))


@dataclass(frozen=True)
class Response:
    """What a fake answers: a status, a JSON (or text) body and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        """The body as bytes and its content type (no body for None)."""
        if self.body is None:
            return b"", ""
        if isinstance(self.body, str):
            return self.body.encode(), "text/html; charset=UTF-8"
        return json.dumps(self.body).encode(), JSON_TYPE


class ApiError(Exception):
    """Raised by a handler to answer with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


Handler = Callable[..., Response]
"""A handler gets the request and the path pattern's named groups as keyword arguments."""


class Router:
    """Routes (method, path regex) to handlers; the first full match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` requests whose path fully matches ``pattern`` with ``handler``."""
        self._routes.append((method, re.compile(pattern), handler))

    def dispatch(self, request: Request) -> Response | None:
        """The handler's response, or None when no route matches the method and path."""
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return handler(request, **match.groupdict())
        return None


App = Callable[[Request], Response]


class ApiServer:
    """Serves an app on 127.0.0.1 at a free port, over TLS when given a context."""

    def __init__(self, app: App, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.requests: list[Request] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:41234``."""
        host, port = self._httpd.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def requests_to(self, method: str, path_pattern: str) -> Iterator[Request]:
        """The requests received so far with this method and a path fully matching the pattern."""
        pattern = re.compile(path_pattern)
        return (r for r in list(self.requests)
                if r.method == method and pattern.fullmatch(r.path))


def _handler_class(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command,
                path=split.path,
                query=dict(parse_qsl(split.query, keep_blank_values=True)),
                headers=self.headers,
                body=self.rfile.read(length) if length else b"",
            )
            server.requests.append(request)
            try:
                response = server.app(request)
            except ApiError as error:
                response = error.response
            body, content_type = response.encoded()
            self.send_response(response.status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the request log is ``ApiServer.requests``."""

    return _Handler
