"""The metrics listener: ``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP.

One small HTTP server per process (the orchestrator, every agent), apart from its gRPC
port, for Prometheus and for load balancers' and Kubernetes' probes:

``/metrics``  the process's registry in the Prometheus text format (prometheus_client's
              own handler: content negotiation, OpenMetrics, gzip)
``/healthz``  200 ``ok`` while the process runs and answers
``/readyz``   200 ``ready`` once it can serve, else 503 with the reason in one line

It answers nothing else (404), needs no token and shows no user's data: the series
are labelled by state, method, pool and node, never by workflow or user, and a
not-ready reason names only the process's own parts. It binds 127.0.0.1 unless
configured otherwise (see docs/metrics.md).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, MetricsHandler

from fuzz.errors import FuzzError

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

ReadyCheck = Callable[[], "str | None"]  # None when ready, else why not, in one line


class StatusListenError(FuzzError):
    """The metrics listener cannot bind its address."""


def _handler(registry: CollectorRegistry, ready: ReadyCheck) -> type[MetricsHandler]:
    class StatusHandler(MetricsHandler):
        """Dispatches the three paths; everything else is 404."""

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == METRICS_PATH:
                super().do_GET()
            elif path == HEALTH_PATH:
                self._text(200, "ok")
            elif path == READY_PATH:
                problem = ready()
                self._text(503 if problem else 200, f"not ready: {problem}" if problem
                           else "ready")
            else:
                self._text(404, "not found: try /metrics, /healthz or /readyz")

        def _text(self, status: int, body: str) -> None:
            data = (body + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes and probes come every few seconds: not logged."""

    StatusHandler.registry = registry
    return StatusHandler


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise StatusListenError(f"metrics listen address {listen!r}: expected HOST:PORT, "
                                "e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a probe's connection never holds the process up


class _Server6(_Server):
    address_family = socket.AF_INET6


class StatusListener:
    """The HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` (threads of its own)."""

    def __init__(self, listen: str, registry: CollectorRegistry, ready: ReadyCheck) -> None:
        """Bind ``listen`` (``HOST:PORT``; port 0: one the system picks); raises
        StatusListenError. Nothing is served until :meth:`start`."""
        host, port = _split(listen)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _handler(registry, ready))
        except OSError as exc:
            raise StatusListenError(
                f"cannot listen for metrics on {listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` it is bound to (the port the system picked for port 0)."""
        address, port = self._server.server_address[:2]
        host = address if isinstance(address, str) else address.decode()
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def start(self) -> None:
        """Serve in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
