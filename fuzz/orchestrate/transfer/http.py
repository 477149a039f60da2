"""``http://`` and ``https://`` ingress sources, streamed with the standard library's urllib.

urllib follows redirects (up to ``MAX_REDIRECTS``, to http or https only: a
redirect to ``ftp://``, ``file://`` or ``data:`` fails the transfer), verifies TLS
against the system's CA bundle, and gives every socket operation
``TIMEOUT_SECONDS``. Failures read ``https://x/y.tar.gz: HTTP 404 Not Found`` or
``http://x/y: Connection refused``.

Where the orchestrator may connect is
:class:`~fuzz.orchestrate.transfer.ingress_policy.IngressPolicy`'s call: by default no
loopback, private, link-local or other internal address, and none of the cluster's own.
Each connection (the first and one per redirect) resolves the host, checks every
address, and connects only to an address that passed: the address checked is the
address connected to, so DNS rebinding cannot swap it in between. No proxy is taken from
the environment (``HTTP_PROXY``, ``NO_PROXY``...);
with the admin's proxy, the destination's addresses are resolved and checked here
before the request is handed to the proxy.
"""

from __future__ import annotations

import http.client
import ipaddress
import posixpath
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit

from fuzz.orchestrate.transfer.ingress_policy import IngressPolicy
from fuzz.orchestrate.transfer.stream import Item, Readable, Source, TransferError, reason_of

TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 5
USER_AGENT = "fuzz-transfer/1"
DEFAULT_PORTS = {"http": 80, "https": 443}


class ForbiddenAddressError(OSError):
    """The server's address is one the orchestrator does not fetch from."""


def _connect_checked(policy: IngressPolicy, address: tuple[str, int],
                     timeout: float | None = None, source_address: Any = None) -> socket.socket:
    """:func:`socket.create_connection`, but only to addresses ``policy`` allows.

    Hand-written because the standard library's resolves and connects in one step,
    with no place to check the address in between.
    """
    host, port = address
    refusals: list[str] = []
    failure: OSError | None = None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port,
                                                               type=socket.SOCK_STREAM):
        refusal = policy.refusal(ipaddress.ip_address(sockaddr[0]), port)
        if refusal is not None:
            refusals.append(refusal)
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    if failure is not None:
        raise failure
    raise ForbiddenAddressError(0, refusals[0] if refusals else f"{host}: no address")


def _check_destination(url: str, policy: IngressPolicy) -> None:
    """Refuse ``url`` unless every address its host resolves to is allowed (before a proxy
    gets it: the proxy connects, so the connected address cannot be checked here)."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise urllib.error.URLError(str(exc)) from None
    refusal = policy.destination_refusal(parts.hostname or "", port)
    if refusal is not None:
        raise ForbiddenAddressError(0, refusal)


def _checked(connection: type[http.client.HTTPConnection], policy: IngressPolicy,
             *args: Any, **kwargs: Any) -> http.client.HTTPConnection:
    """A ``connection`` whose socket goes only where ``policy`` allows."""
    made = connection(*args, **kwargs)
    made._create_connection = partial(_connect_checked, policy)  # type: ignore[attr-defined]
    return made


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: IngressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        if self.policy.proxy is not None:
            _check_destination(req.full_url, self.policy)
            return self.do_open(http.client.HTTPConnection, req)
        return self.do_open(partial(_checked, http.client.HTTPConnection, self.policy), req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: IngressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        if self.policy.proxy is not None:
            _check_destination(req.full_url, self.policy)
            return super().https_open(req)
        return self.do_open(partial(_checked, http.client.HTTPSConnection, self.policy), req,
                            context=self._context)  # type: ignore[attr-defined]


class _BoundedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows at most ``MAX_REDIRECTS`` redirects, to http and https only."""

    max_repeats = MAX_REDIRECTS + 1  # loops too end at MAX_REDIRECTS, with this message

    def http_error_302(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                       headers: HTTPMessage) -> Any:
        target = headers.get("location") or headers.get("uri")
        if target is not None:
            target = urljoin(req.full_url, target)
            if urlsplit(target).scheme not in DEFAULT_PORTS:
                fp.close()
                raise urllib.error.URLError(
                    f"redirected to {target}: only http:// and https:// redirects are followed")
            if sum(getattr(req, "redirect_dict", {}).values()) >= MAX_REDIRECTS:
                fp.close()
                raise urllib.error.URLError(
                    f"more than {MAX_REDIRECTS} redirects (the last to {target})")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(policy: IngressPolicy) -> urllib.request.OpenerDirector:
    """An opener of http and https only (no ftp, file or data handler), whose connections
    ``policy`` checks, and whose only proxy is the policy's (never the environment's)."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        _CheckedHTTPHandler(policy), _CheckedHTTPSHandler(policy), _BoundedRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler()]
    if policy.proxy is not None:
        handlers.append(urllib.request.ProxyHandler({"http": policy.proxy,
                                                     "https": policy.proxy}))
    for handler in handlers:
        opener.add_handler(handler)
    return opener


@contextmanager
def http_errors(uri: str) -> Iterator[None]:
    """Turn urllib's and http.client's exceptions into TransferError naming ``uri``."""
    try:
        yield
    except urllib.error.HTTPError as exc:
        exc.close()
        raise TransferError(f"{uri}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = reason_of(reason) if isinstance(reason, BaseException) else str(reason)
        raise TransferError(f"{uri}: {text}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"{uri}: {reason_of(exc)}") from exc


Validators = tuple[str, int]
"""What names a version of an HTTP resource: ``ETag "x"`` or ``Last-Modified DATE``, and
its Content-Length."""

def http_source(uri: str, policy: IngressPolicy | None = None,
                expect: Validators | None = None) -> Source:
    """The file at ``uri``; its name is the last segment of the URL's path.

    A connection ``policy`` refuses (default: :class:`IngressPolicy`'s defaults, no
    allow-list, no proxy) fails the transfer; so does an answer whose validators are not
    ``expect`` (the resource changed since they were read).
    """
    name = posixpath.basename(unquote(urlsplit(uri).path))
    opener = partial(_open, uri, policy or IngressPolicy(), expect)
    return Source(uri, False, [Item(name, opener)], None, partial(http_errors, uri))


def http_validators(uri: str, policy: IngressPolicy | None = None) -> Validators | None:
    """The validators a HEAD of ``uri`` answers with; None when it has none to rely on (no
    Content-Length, or neither a strong ETag nor Last-Modified) or answers HEAD with an
    HTTP error (a server without HEAD, a URL signed for GET only: the GET then says
    what it says). Where the policy refuses to connect, or the connection fails,
    TransferError as for a GET."""
    request = urllib.request.Request(uri, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        with http_errors(uri), _opener(policy or IngressPolicy()).open(
                request, timeout=TIMEOUT_SECONDS) as response:
            return _validators(response.headers)
    except TransferError as exc:
        if isinstance(exc.__cause__, urllib.error.HTTPError):
            return None
        raise


def _validators(headers: HTTPMessage) -> Validators | None:
    length = headers.get("Content-Length", "")
    etag = headers.get("ETag", "")
    modified = headers.get("Last-Modified", "")
    if not length.isdigit():
        return None
    if etag and not etag.startswith("W/"):
        return f"ETag {etag}", int(length)
    if modified:
        return f"Last-Modified {modified}", int(length)
    return None


@contextmanager
def _open(uri: str, policy: IngressPolicy, expect: Validators | None
          ) -> Iterator[tuple[Readable, int | None]]:
    request = urllib.request.Request(uri, headers={"User-Agent": USER_AGENT})
    with _opener(policy).open(request, timeout=TIMEOUT_SECONDS) as response:
        if expect is not None and _validators(response.headers) != expect:
            raise TransferError(f"{uri}: changed while it was fetched (its ETag, "
                                "Last-Modified or size is not what it was a moment before)")
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None
