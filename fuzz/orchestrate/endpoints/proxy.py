"""One browser connection to the endpoint gateway: HTTP/1.1 in, relayed to services.

h11 parses both sides (the browser's requests, the service's responses), so framing
(Content-Length, chunked, bodiless responses) is h11's and the relay only passes
events on: a chunked response is relayed chunk by chunk as it comes. One exception,
for speed: a response body framed by Content-Length is read by h11 only as far as h11
already holds it; the rest is copied from the service's connection to the browser as
it comes, counted, unparsed (h11 on the browser's side still frames it). Each request is
routed on its own (a keep-alive connection may go from endpoint to endpoint), checked
against its endpoint's scope (:mod:`.scope`), and relayed over a connection to the
service that is kept while the service keeps it. A ``101 Switching Protocols``
answer to an ``Upgrade`` request (WebSocket) turns the connection into a byte pipe
both ways until either side closes.

What the service sees: the request as the browser sent it, less the gateway's session
cookie, the ``Authorization`` the gateway consumed and any ``X-Fuzzball-*`` header the
browser sent, plus ``X-Fuzzball-Account-ID`` (the workflow's account, else its owner),
``X-Fuzzball-User`` (who is signed in; empty on a public endpoint without sign-in) and
``X-Forwarded-Proto/Host/For``. Tokens and cookies are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import parse_qs, quote, urlsplit

import h11

from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints import signin
from fuzz.orchestrate.endpoints.browsertls import BrowserTls
from fuzz.orchestrate.endpoints.scope import Verdict, Viewer, decide
from fuzz.orchestrate.endpoints.sessions import (
    COOKIE_NAME,
    SignIns,
    cookie_value,
    set_cookie,
    without_session_cookie,
)
from fuzz.spec.endpoint_urls import EndpointAddress, locate_host, locate_path

logger = logging.getLogger(__name__)

READ_BYTES = 256 * 1024
WRITE_BATCH = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
IDLE_SECONDS = 120.0  # a keep-alive connection waiting for its next request
MAX_DRAINED_BODY = 1024 * 1024  # a refused request's body is read past up to this, else closed
MAX_FORM_BYTES = 16 * 1024
# a Content-Length body past h11's buffer this large is corked and, over TLS, encrypted
# and sent by two threads
LARGE_BODY_BYTES = 1024 * 1024
OPEN_ACTION = "endpoint:open"
SIGN_IN_ACTION = "endpoint:sign-in"
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                         b"trailer", b"upgrade"})
_DROPPED = frozenset({b"authorization", b"cookie", b"expect", b"x-forwarded-proto",
                      b"x-forwarded-host", b"x-forwarded-for"})


class EndpointNotFoundError(FuzzError):
    """No endpoint of that name: no such workflow, service or endpoint (or not running)."""


class EndpointUnavailableError(FuzzError):
    """The endpoint exists but its service cannot be reached now (one sentence why)."""


@dataclass(frozen=True)
class Route:
    """A declared endpoint: who may open it and where its service listens."""

    address: EndpointAddress
    scope: str
    account: str  # the workflow's account; empty: none
    port: int  # the service's container port


class Backend(Protocol):
    """A connection to a service, and why it failed if it did."""

    error: str | None

    def send(self, data: bytes) -> None:
        """Send ``data`` to the service (OSError: the connection is gone)."""

    def recv(self) -> bytes | memoryview:
        """What the service sends next; empty once it has sent everything."""

    def socket(self) -> socket.socket:
        """The connection as a socket, for passing bytes both ways with ``select`` (after a
        protocol switch; :meth:`send` and :meth:`recv` are not used again)."""

    def close(self) -> None:
        """End it."""

    def finish(self) -> None:
        """End it after a complete answer of a service that closes its connection now
        (``Connection: close``): what can serve again may wait for the service's end
        first, briefly, to be kept."""


class Resolver(Protocol):
    """Where endpoints are: the orchestrator's workflows (or a test's)."""

    def route(self, address: EndpointAddress) -> Route:
        """The endpoint at ``address``; EndpointNotFoundError when there is none."""

    def connect(self, route: Route) -> Backend:
        """A new connection to ``route``'s service; EndpointUnavailableError saying why not."""


class Identified(Protocol):
    """What the gateway needs of an authenticated identity."""

    @property
    def user(self) -> str:
        """Who it is."""

    @property
    def groups(self) -> tuple[str, ...]:
        """The IAM groups (accounts) they are in now."""

    @property
    def expires(self) -> float:
        """When their token expires (0: never)."""


class Authenticator(Protocol):
    """Tokens and login codes (the orchestrator's IAM directory)."""

    def authenticate(self, token: str) -> Identified:
        """The identity of ``token``; AuthenticationError if there is none."""

    def login(self, code: str, ttl: float = 0.0) -> tuple[str, str, float]:
        """Spend a login code: (token, user, expiry)."""


@dataclass
class GatewayParts:
    """What every connection shares."""

    resolver: Resolver
    iam: Authenticator
    sign_ins: SignIns
    domain: str  # subdomain endpoints' wildcard domain; empty: none
    is_code: Callable[[str], bool]  # a login code (spent for a token) rather than a token
    # the audit log's record(who, action, resource, allowed, reason): every decision on a
    # non-public endpoint, and every refused sign-in
    audit: Callable[[str, str, str, bool, str], None]


class _Closed(Exception):
    """The browser went away, or its connection cannot go on."""


class Connection:
    """One accepted (TLS) connection, served request by request until either side ends it."""

    def __init__(self, parts: GatewayParts, sock: socket.socket | BrowserTls,
                 peer: str) -> None:
        """Serve ``sock`` (from ``peer``) with ``parts``."""
        self._parts = parts
        self._sock = sock
        self._peer = peer
        self._client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._backend: Backend | None = None
        self._backend_h11: h11.Connection | None = None
        self._backend_address: EndpointAddress | None = None
        # Writes wait here until the connection would otherwise wait for a read (or
        # much has gathered): a small answer leaves in one TLS record, a small request
        # in one message to the agent.
        self._browser_out = bytearray()
        self._service_out = bytearray()

    def _to_browser(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= WRITE_BATCH:  # a large piece goes as it is, without a copy here
            self._flush()
            self._sock.sendall(data)
            return
        self._browser_out += data
        if len(self._browser_out) >= WRITE_BATCH:
            self._flush()

    def _to_service(self, data: bytes) -> None:
        self._service_out += data
        if len(self._service_out) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        """Send what waits, to the service first (its answer is what the browser awaits)."""
        if self._service_out and self._backend is not None:
            self._backend.send(bytes(self._service_out))
        self._service_out.clear()
        if self._browser_out:
            self._sock.sendall(self._browser_out)
            self._browser_out.clear()

    def serve(self) -> None:
        """Answer requests until the connection ends."""
        try:
            while True:
                self._sock.settimeout(IDLE_SECONDS)
                event = self._next(self._client)
                if not isinstance(event, h11.Request):
                    return
                if not self._answer(event):
                    return
                if self._client.our_state is not h11.DONE or \
                        self._client.their_state is not h11.DONE:
                    return
                self._client.start_next_cycle()
        except (_Closed, OSError, h11.ProtocolError, ssl.SSLError):
            return
        except FuzzError as exc:  # the audit log cannot be written: no answer without it
            logger.error("endpoint gateway: %s", exc)
            return
        finally:
            with contextlib.suppress(OSError, ssl.SSLError):
                self._flush()
            self._drop_backend()
            with contextlib.suppress(OSError):
                self._sock.close()

    # --- one request -------------------------------------------------------------------

    def _answer(self, request: h11.Request) -> bool:
        """Answer one request; False when the connection must end."""
        target = request.target.decode("latin-1")
        headers = _header_map(request.headers)
        path = urlsplit(target).path
        if path.startswith(signin.PREFIX):
            return self._sign_in(request, target, headers)
        address = self._locate(headers.get(b"host", b"").decode("latin-1"), target)
        if address is None:
            return self._local(404, "text/plain", b"no endpoint here\n")
        try:
            route = self._parts.resolver.route(address)
        except EndpointNotFoundError as exc:
            return self._local(404, "text/plain", f"{exc}\n".encode())
        viewer, problem = self._viewer(headers, route.scope)
        if problem is not None:
            return self._local(401, "text/plain", f"{problem}\n".encode(),
                               [(b"www-authenticate", b'Bearer realm="fuzz endpoints"')])
        verdict = decide(route.scope, address.owner, route.account, viewer)
        if route.scope != "public":
            self._parts.audit(viewer.user if viewer else "-", OPEN_ACTION, _resource(address),
                              verdict is Verdict.ALLOW, f"scope {route.scope}: {verdict.value}")
        if verdict is Verdict.SIGN_IN:
            return self._local(302, "text/plain", b"sign in first\n",
                               [(b"location", signin.url_for(target).encode())])
        if verdict is Verdict.DENY:
            assert viewer is not None
            return self._local(403, "text/plain", (
                f"{viewer.user} may not open endpoint {address.endpoint} of "
                f"{address.owner}/{address.workflow} (scope {route.scope})\n").encode())
        if path == address.path_prefix.rstrip("/") and not self._by_host(headers):
            query = target[len(path):]
            return self._local(308, "text/plain", b"", [(b"location",
                                                         (address.path_prefix + query).encode())])
        return self._relay(request, route, viewer, headers)

    def _locate(self, host: str, target: str) -> EndpointAddress | None:
        return locate_host(host, self._parts.domain) if self._parts.domain and \
            locate_host(host, self._parts.domain) else locate_path(target)

    def _by_host(self, headers: dict[bytes, bytes]) -> bool:
        host = headers.get(b"host", b"").decode("latin-1")
        return bool(self._parts.domain) and locate_host(host, self._parts.domain) is not None

    def _viewer(self, headers: dict[bytes, bytes], scope: str
                ) -> tuple[Viewer | None, str | None]:
        """Who is signed in (bearer token first, then the session cookie), and, for a
        bearer token that is refused, why."""
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip() and scope != "public":
            try:
                identity = self._parts.iam.authenticate(token.strip())
            except FuzzError as exc:
                self._parts.audit("-", "authenticate", "-", False, str(exc))
                return None, str(exc)
            return Viewer(identity.user, identity.groups), None
        cookie = cookie_value(headers.get(b"cookie", b""))
        session_token = self._parts.sign_ins.token(cookie) if cookie else None
        if session_token is None:
            return None, None
        try:
            identity = self._parts.iam.authenticate(session_token)
        except FuzzError:
            return None, None  # revoked or expired since: sign in again
        return Viewer(identity.user, identity.groups), None

    # --- the relay ---------------------------------------------------------------------

    def _relay(self, request: h11.Request, route: Route, viewer: Viewer | None,
               headers: dict[bytes, bytes]) -> bool:
        try:
            backend, upstream = self._backend_for(route)
            upstream_request_headers = self._service_headers(request, route, viewer, headers)
            self._to_service(upstream.send(h11.Request(
                method=request.method, target=request.target,
                headers=upstream_request_headers)))
            if self._client.client_is_waiting_for_100_continue:
                # the gateway reads the body whole before the service answers: ask for it
                self._to_browser(self._client.send(h11.InformationalResponse(
                    status_code=100, headers=[])))
            while True:  # the request's body, as it comes
                event = self._next(self._client)
                if isinstance(event, h11.Data):
                    self._to_service(upstream.send(h11.Data(data=event.data)))
                elif isinstance(event, h11.EndOfMessage):
                    self._to_service(upstream.send(h11.EndOfMessage()))
                    break
                else:
                    raise _Closed
            response = self._next(upstream, backend.recv)
            while isinstance(response, h11.InformationalResponse) and \
                    response.status_code != 101:  # 100, 103: the gateway's own business
                response = self._next(upstream, backend.recv)
        except (OSError, h11.ProtocolError, _UpstreamClosed) as exc:
            reason = (self._backend.error if self._backend is not None else None) or str(exc)
            self._drop_backend()
            if self._client.their_state is h11.SEND_BODY and not self._drain_request():
                raise _Closed from None
            return self._local(502, "text/plain", (
                f"endpoint {route.address.endpoint} of {route.address.owner}/"
                f"{route.address.workflow}: the service did not answer ({reason})\n").encode(),
                close=True)
        except EndpointUnavailableError as exc:
            self._drain_request()
            return self._local(503, "text/plain", f"{exc}\n".encode())
        if isinstance(response, h11.InformationalResponse) and response.status_code == 101:
            self._to_browser(self._client.send(h11.InformationalResponse(
                status_code=101, headers=response.headers, reason=response.reason)))
            self._flush()
            with backend.socket() as service:
                self._pipe(service, upstream)
            return False
        if not isinstance(response, h11.Response):
            self._drop_backend()
            raise _Closed
        self._to_browser(self._client.send(h11.Response(
            status_code=response.status_code, reason=response.reason,
            headers=_service_response_headers(response.headers))))
        length = _counted_length(request.method, response)
        try:
            if length is not None and not self._relay_counted(upstream, backend, length):
                # h11 did not see the body: the next answer starts afresh, or the service
                # closes now (as h11 would have told) and its end is awaited
                if not _keeps_alive(upstream_request_headers, response):
                    self._end_backend()
                else:
                    self._backend_h11 = h11.Connection(h11.CLIENT,
                                                       max_incomplete_event_size=MAX_HEADER_BYTES)
                return True
            while length is None:  # the body as it comes (chunk by chunk when chunked)
                event = self._next(upstream, backend.recv)
                if isinstance(event, h11.Data):
                    self._pass_on(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._to_browser(self._client.send(h11.EndOfMessage()))
                    break
        except (OSError, h11.ProtocolError, _UpstreamClosed):
            self._drop_backend()
            raise _Closed from None  # cut off mid-answer: so must the browser be
        if upstream.our_state is h11.DONE and upstream.their_state is h11.DONE:
            upstream.start_next_cycle()
        elif upstream.their_state is h11.MUST_CLOSE:
            self._end_backend()
        else:
            self._drop_backend()
        return True

    def _pass_on(self, data: bytes | memoryview) -> None:
        """Part of the response's body, to the browser (framed as its h11 says)."""
        # h11 passes a Content-Length body's data on as it is: a view does as well as bytes
        for piece in self._client.send_with_data_passthrough(
                h11.Data(data=cast(bytes, data))) or ():
            self._to_browser(piece)

    def _relay_counted(self, upstream: h11.Connection, backend: Backend, length: int) -> bool:
        """Relay a body of ``length`` bytes (Content-Length): what h11 holds of it through
        h11, the rest as it comes from the service, unparsed, in the service
        connection's large pieces (a large download is not copied twice more in h11).
        True when h11 read it all (and is in step); OSError or _UpstreamClosed when the
        service's connection ended short of it, or sent more."""
        while True:
            event = upstream.next_event()
            if isinstance(event, h11.Data):
                self._pass_on(event.data)
                length -= len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._to_browser(self._client.send(h11.EndOfMessage()))
                return True
            elif event is h11.NEED_DATA:
                break
            else:
                raise _UpstreamClosed("it closed the connection")
        large = length >= LARGE_BODY_BYTES
        with self._corked(large), self._sending_behind(large):
            while length:
                self._flush()
                data = backend.recv()
                if not data or len(data) > length:
                    raise _UpstreamClosed("it closed the connection" if not data
                                          else "it sent more than its Content-Length")
                self._pass_on(data)
                length -= len(data)
        self._to_browser(self._client.send(h11.EndOfMessage()))
        return False

    def _sending_behind(self, large: bool) -> contextlib.AbstractContextManager[None]:
        """For a ``large`` body to a TLS browser: this thread reads the service and
        encrypts while a second one sends the records (:meth:`BrowserTls.sending_behind`),
        so that the two cores share a download; otherwise one thread does both."""
        if large and isinstance(self._sock, BrowserTls):
            return self._sock.sending_behind()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _corked(self, cork: bool) -> Iterator[None]:
        """While in the block (if ``cork``), the browser's TCP connection sends full
        segments only (``TCP_CORK``; the rest leaves when the block ends, or within the
        kernel's 200 ms): a large body's TLS records, one ``send`` each, then cross the
        kernel in a quarter as many packets on loopback's 64 KiB segments."""
        if not cork:
            yield
            return
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def _end_backend(self) -> None:
        """The service answered and closes its connection: let it end (what can be kept
        is), after the browser has its answer."""
        if self._backend is not None:
            self._flush()
            self._backend.finish()
            self._backend = None
        self._drop_backend()

    def _backend_for(self, route: Route) -> tuple[Backend, h11.Connection]:
        """The open connection to ``route``'s service, or a new one."""
        if self._backend is None or self._backend_address != route.address or \
                self._backend_h11 is None:
            self._drop_backend()
            self._backend = self._parts.resolver.connect(route)
            self._backend_h11 = h11.Connection(h11.CLIENT,
                                               max_incomplete_event_size=MAX_HEADER_BYTES)
            self._backend_address = route.address
        return self._backend, self._backend_h11

    def _drop_backend(self) -> None:
        self._service_out.clear()
        if self._backend is not None:
            self._backend.close()
        self._backend = self._backend_h11 = self._backend_address = None

    def _service_headers(self, request: h11.Request, route: Route, viewer: Viewer | None,
                         headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        kept: list[tuple[bytes, bytes]] = []
        for name, value in request.headers:
            if name.startswith(b"x-fuzzball-") or name in _DROPPED:
                if name == b"authorization" and route.scope == "public":
                    kept.append((name, value))  # not the gateway's: the service's own
                continue
            kept.append((name, value))
        cookies = without_session_cookie(headers.get(b"cookie", b""))
        if cookies:
            kept.append((b"cookie", cookies))
        account = route.account or route.address.owner
        kept += [(b"x-fuzzball-account-id", account.encode()),
                 (b"x-fuzzball-user", (viewer.user if viewer else "").encode()),
                 (b"x-forwarded-proto", b"https"),
                 (b"x-forwarded-host", headers.get(b"host", b"")),
                 (b"x-forwarded-for", self._peer.encode())]
        return kept

    def _pipe(self, upstream_sock: socket.socket, upstream: h11.Connection) -> None:
        """Pass bytes both ways after a protocol switch, until either side closes."""
        early_client, _ = self._client.trailing_data
        early_service, _ = upstream.trailing_data
        self._sock.settimeout(None)
        if early_client:
            upstream_sock.sendall(early_client)
        if early_service:
            self._sock.sendall(early_service)
        browser = self._sock
        while True:
            ready = [browser] if isinstance(browser, BrowserTls) and browser.pending() \
                else select.select([browser, upstream_sock], [], [])[0]
            for sock in ready:
                data = sock.recv(READ_BYTES)
                if not data:
                    return
                (upstream_sock if sock is browser else browser).sendall(data)

    # --- answers of the gateway's own ----------------------------------------------------

    def _local(self, status: int, content_type: str, body: bytes,
               extra: list[tuple[bytes, bytes]] | None = None, close: bool = False) -> bool:
        """Answer with ``body`` ourselves (the request's body read past first)."""
        if not close:
            close = not self._drain_request()
        headers = [(b"content-type", content_type.encode()),
                   (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store"), *(extra or [])]
        if close:
            headers.append((b"connection", b"close"))
        self._to_browser(self._client.send(h11.Response(status_code=status, headers=headers)))
        if body:
            self._to_browser(self._client.send(h11.Data(data=body)))
        self._to_browser(self._client.send(h11.EndOfMessage()))
        logger.info("endpoint gateway: %s %d", self._peer, status)
        return not close

    def _drain_request(self) -> bool:
        """Read the rest of the request's body (up to a limit); False if it was too big."""
        read = 0
        while self._client.their_state is h11.SEND_BODY:
            event = self._next(self._client)
            if isinstance(event, h11.Data):
                read += len(event.data)
                if read > MAX_DRAINED_BODY:
                    return False
            elif not isinstance(event, h11.EndOfMessage):
                return False
        return True

    def _sign_in(self, request: h11.Request, target: str, headers: dict[bytes, bytes]) -> bool:
        """The sign-in page (GET), the form it posts (POST), and signing out."""
        split = urlsplit(target)
        wanted = signin.safe_next(parse_qs(split.query).get("next", ["/"])[0])
        if split.path == signin.SIGN_OUT:
            cookie = cookie_value(headers.get(b"cookie", b""))
            if cookie:
                self._parts.sign_ins.close(cookie)
            return self._local(200, "text/html; charset=utf-8", signin.signed_out_page(),
                               [(b"set-cookie", set_cookie("", 0))])
        if request.method != b"POST":
            return self._local(200, "text/html; charset=utf-8", signin.page(wanted, ""))
        form = self._form()
        if form is None:
            return self._local(413, "text/plain", b"the form is too large\n", close=True)
        credential = form.get("credential", [""])[0].strip()
        wanted = signin.safe_next(form.get("next", [wanted])[0])
        try:
            if self._parts.is_code(credential):
                token, _, expires = self._parts.iam.login(credential)
            else:
                token, expires = credential, self._parts.iam.authenticate(credential).expires
        except FuzzError as exc:
            self._parts.audit("-", SIGN_IN_ACTION, "-", False, str(exc))
            return self._local(401, "text/html; charset=utf-8", signin.page(wanted, str(exc)))
        value, max_age = self._parts.sign_ins.open(token, expires)
        return self._local(303, "text/plain", b"signed in\n",
                           [(b"location", quote(wanted, safe="/?&=%:;@+,~!$*'()#").encode()),
                            (b"set-cookie", set_cookie(value, max_age))])

    def _form(self) -> dict[str, list[str]] | None:
        body = b""
        while True:
            event = self._next(self._client)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_FORM_BYTES:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return parse_qs(body.decode("utf-8", "replace"))
            else:
                raise _Closed

    # --- reading -------------------------------------------------------------------------

    def _next(self, conn: h11.Connection,
              read: Callable[[], bytes | memoryview] | None = None) -> object:
        """The next h11 event of ``conn``, calling ``read`` for more as needed (the
        browser's socket without it)."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                self._flush()
                try:
                    data = read() if read is not None else self._sock.recv(READ_BYTES)
                except TimeoutError:
                    raise _Closed from None
                if not data and conn is not self._client and conn.their_state is h11.SEND_RESPONSE:
                    raise _UpstreamClosed("it closed the connection")
                # h11 appends it to a bytearray: a memoryview does as well as bytes
                conn.receive_data(cast(bytes, data))
                continue
            if isinstance(event, h11.ConnectionClosed) and conn is not self._client:
                raise _UpstreamClosed("it closed the connection")
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise _Closed
            return event


def _resource(address: EndpointAddress) -> str:
    """An endpoint as the audit log names it."""
    return (f"endpoint/{address.owner}/{address.workflow}/{address.service}/"
            f"{address.endpoint}")


class _UpstreamClosed(Exception):
    """The service's connection ended before its answer did."""


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Headers by lower-case name (repeated ones joined as HTTP allows: ``Cookie`` by '; ')."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in found:
            found[name] += (b"; " if name == b"cookie" else b", ") + value
        else:
            found[name] = value
    return found


def _counted_length(method: bytes, response: h11.Response) -> int | None:
    """The length of ``response``'s body when its Content-Length frames it (None: it is
    chunked, read until the close, or there is none), as h11 would read it."""
    if method == b"HEAD" or response.status_code in (204, 304):
        return None
    headers = _header_map(response.headers)
    if b"transfer-encoding" in headers or b"content-length" not in headers:
        return None
    return int(headers[b"content-length"])  # h11 checked it: digits, and one value


def _keeps_alive(request_headers: Iterable[tuple[bytes, bytes]],
                 response: h11.Response) -> bool:
    """Whether the service's connection serves another request after this exchange (as
    h11 decides: HTTP/1.1, and ``Connection: close`` on neither side)."""
    closing = any(name.lower() == b"connection" and b"close" in value.lower()
                  for name, value in (*request_headers, *response.headers))
    return response.http_version == b"1.1" and not closing


def _service_response_headers(headers: Iterable[tuple[bytes, bytes]]
                              ) -> list[tuple[bytes, bytes]]:
    """The service's response headers, less its hop-by-hop ones (whether the service
    closes its connection is not the browser's business: the gateway keeps the
    browser's) and any attempt to set the gateway's cookie."""
    marker = COOKIE_NAME.encode() + b"="
    return [(name, value) for name, value in headers
            if name not in _HOP_BY_HOP
            and not (name == b"set-cookie" and value.lstrip().startswith(marker))]
