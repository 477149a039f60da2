"""A replica that does not lead: it waits for the lease, answering on its address.

While another replica leads, a ``fuzz server`` on a PostgreSQL store listens where it
will serve once it leads, and answers every call UNAVAILABLE, naming the leader's
address, and health checks NOT_SERVING: clients and agents given several addresses
(``orchestrator.replicas``) pick the one whose health check says SERVING (see
:mod:`fuzz.rpc.replicas`); one given only this address reads where to go. Calls are
not relayed to the leader: the leader then sees every caller's own TLS connection
(agents prove themselves by their certificate), and a bearer token never passes
through a second process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Gauge

from fuzz.fsutil import write_json_atomic
from fuzz.orchestrate.connect import INFO_FILE
from fuzz.orchestrate.leadership import LeaderLease
from fuzz.orchestrate.metrics import LEADER_HELP
from fuzz.orchestrate.store_sql import DATABASE_ERRORS
from fuzz.rpc.auth import HEALTH_SERVICE
from fuzz.rpc.client import STANDBY_ANSWER
from fuzz.rpc.server import ServerStartError, TlsFiles, start_server
from fuzz.rpc.statusweb import StatusListener, StatusListenError
from fuzz.spec.cluster import MetricsSpec

logger = logging.getLogger(__name__)

STANDBY_SERVICE = "fuzz.Standby"


class _Refuse(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method but the health check: UNAVAILABLE, naming the leader."""

    def __init__(self, lease: LeaderLease) -> None:
        self._lease = lease

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method.startswith(f"/{HEALTH_SERVICE}/"):
            return None
        return grpc.stream_stream_rpc_method_handler(self._refuse)

    def _refuse(self, requests: Iterator[bytes], context: grpc.ServicerContext
                ) -> Iterator[bytes]:
        leader = self._lease.leader()
        where = f"the leader is at {leader.address}" if leader is not None and leader.live \
            else "no replica leads at the moment; try again in a few seconds"
        context.abort(grpc.StatusCode.UNAVAILABLE, f"{STANDBY_ANSWER}: {where}")
        yield b""  # never reached: abort raises; a generator, as the handler kind needs


def _status(spec: MetricsSpec) -> StatusListener | None:
    """A standby's ``/healthz`` (live), ``/readyz`` (not ready: load balancers and a
    Kubernetes Service send nobody to it) and ``/metrics`` (``fuzz_leader`` 0)."""
    if not spec.enabled:
        return None
    registry = CollectorRegistry()
    Gauge("fuzz_leader", LEADER_HELP, registry=registry).set(0)
    listener = StatusListener(spec.listen, registry,
                              lambda: "standing by: another replica leads")
    listener.start()
    return listener


def stand_by(lease: LeaderLease, listen: str, tls: TlsFiles | None, metrics: MetricsSpec,
             data_dir: Path, stop: threading.Event) -> bool:
    """Wait until this replica takes ``lease`` (True) or ``stop`` is set (False).

    Unless the lease is free at once, it answers on ``listen`` meanwhile (see the
    module), and on the metrics listener, and records itself in ``DATA_DIR/server.json``
    as a standby. Raises ServerStartError when it cannot listen.
    """
    if lease.try_take():
        return True
    running = start_server(listen, lambda token: None,
                           lambda server: server.add_generic_rpc_handlers((_Refuse(lease),)),
                           STANDBY_SERVICE, tls=tls, max_workers=8, serving=False)
    try:
        status = _status(metrics)
    except StatusListenError as exc:
        running.server.stop(0).wait()
        raise ServerStartError(str(exc)) from None
    leader = lease.leader()
    logger.info("standing by as a replica on %s; the leader is %s", running.endpoint,
                leader.address if leader is not None else "not known yet")
    write_json_atomic(data_dir / INFO_FILE, {
        "pid": os.getpid(), "endpoint": running.endpoint, "role": "standby",
        "metrics": status.endpoint if status is not None else None})
    try:
        while not stop.wait(lease.ttl / 4):
            try:
                taken = lease.try_take()
            except DATABASE_ERRORS as exc:  # the database restarting: wait for it
                logger.warning("cannot reach the store to take the lease: %s", exc)
                continue
            if taken:
                logger.info("took the leadership lease (epoch %d)", lease.epoch)
                return True
        return False
    finally:
        running.server.stop(0).wait()
        if status is not None:
            status.stop()
        (data_dir / INFO_FILE).unlink(missing_ok=True)
