"""``http://`` and ``https://`` ingress sources, streamed with the standard library's urllib.

urllib follows redirects (up to 10, to http or https only), verifies TLS against
the system's CA bundle, and gives every socket operation ``TIMEOUT_SECONDS``.
Failures read ``https://x/y.tar.gz: HTTP 404 Not Found`` or
``http://127.0.0.1:9/x: Connection refused``.

The orchestrator never fetches from a link-local address (``169.254.0.0/16``,
``fe80::/10``, AWS's ``fd00:ec2::254``): cloud metadata services live there, and an
ingress from ``http://169.254.169.254/...`` would hand the orchestrator's cloud
credentials to whoever wrote the Fuzzfile. The address is checked on every
connection urllib opens (redirects included) once it is connected, so DNS tricks
do not get around it.
"""

from __future__ import annotations

import http.client
import ipaddress
import posixpath
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from urllib.parse import unquote, urlsplit

from fuzz.orchestrate.transfer_stream import Item, Readable, Source, TransferError, reason_of

TIMEOUT_SECONDS = 60.0
USER_AGENT = "fuzz-transfer/1"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CLOUD_METADATA_NETWORKS: tuple[Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


class ForbiddenAddressError(OSError):
    """The server's address is one the orchestrator never fetches from."""


def _check_peer(sock: socket.socket, forbidden: Sequence[Network]) -> None:
    address = ipaddress.ip_address(sock.getpeername()[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in forbidden):
        sock.close()
        raise ForbiddenAddressError(
            0, f"refusing to fetch from {address} (link-local: where cloud metadata "
            "services answer)")


def _opener(forbidden: Sequence[Network]) -> urllib.request.OpenerDirector:
    """urllib's usual opener, with connections that refuse ``forbidden`` peers."""

    class CheckedHTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            _check_peer(self.sock, forbidden)

    class CheckedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            http.client.HTTPConnection.connect(self)  # plain TCP first: check, then TLS
            _check_peer(self.sock, forbidden)
            server_hostname = self._tunnel_host or self.host  # type: ignore[attr-defined]
            self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
                self.sock, server_hostname=server_hostname)

    class CheckedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(CheckedHTTPConnection, req)

    class CheckedHTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(CheckedHTTPSConnection, req)

    return urllib.request.build_opener(CheckedHTTPHandler, CheckedHTTPSHandler)


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


def http_source(uri: str, forbidden: Sequence[Network] = CLOUD_METADATA_NETWORKS) -> Source:
    """The file at ``uri``; its name is the last segment of the URL's path.

    A connection to an address in ``forbidden`` fails the transfer.
    """
    name = posixpath.basename(unquote(urlsplit(uri).path))
    return Source(uri, False, [Item(name, partial(_open, uri, forbidden))], None,
                  partial(http_errors, uri))


@contextmanager
def _open(uri: str, forbidden: Sequence[Network]) -> Iterator[tuple[Readable, int | None]]:
    request = urllib.request.Request(uri, headers={"User-Agent": USER_AGENT})
    with _opener(forbidden).open(request, timeout=TIMEOUT_SECONDS) as response:
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None
