"""``http://`` and ``https://`` ingress sources, streamed with the standard library's urllib.

urllib follows redirects (up to 10, to http or https only), verifies TLS against
the system's CA bundle, and gives every socket operation ``TIMEOUT_SECONDS``.
Failures read ``https://x/y.tar.gz: HTTP 404 Not Found`` or
``http://127.0.0.1:9/x: Connection refused``.
"""

from __future__ import annotations

import http.client
import posixpath
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from urllib.parse import unquote, urlsplit

from fuzz.orchestrate.transfer_stream import Item, Readable, Source, TransferError, reason_of

TIMEOUT_SECONDS = 60.0
USER_AGENT = "fuzz-transfer/1"


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


def http_source(uri: str) -> Source:
    """The file at ``uri``; its name is the last segment of the URL's path."""
    name = posixpath.basename(unquote(urlsplit(uri).path))
    return Source(uri, False, [Item(name, partial(_open, uri))], None, partial(http_errors, uri))


@contextmanager
def _open(uri: str) -> Iterator[tuple[Readable, int | None]]:
    request = urllib.request.Request(uri, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        length = response.headers.get("Content-Length", "")
        yield response, int(length) if length.isdigit() else None
