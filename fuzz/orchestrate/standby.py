"""A replica that does not lead: it waits for the lease, forwarding calls to the leader.

While another replica leads, a ``fuzz server`` on a PostgreSQL store listens where it
will serve once it leads, and relays every user's call to the leader's recorded
address (:class:`fuzz.rpc.forward.Relay`: bytes in, bytes out, over the cluster's TLS,
verifying the leader's certificate with the cluster CA), with the caller's metadata
(the bearer token) and the leader's answer, code and details unchanged: every replica
serves the API. The leader authenticates and authorizes each call as if it came
straight from the caller; the standby checks no token and keeps none.

Not forwarded: the agents' calls (:data:`AGENT_METHODS`), which prove the caller by
its node's certificate, join token or job launch token rather than a user's token;
agents go to the leader themselves (given several addresses they pick the one whose
health check says SERVING, :func:`fuzz.rpc.client.live_replica`), so these are answered
UNAVAILABLE, naming the leader. The health check is the standby's own: NOT_SERVING.
A call forwarded to a leader that stops leading meanwhile ends UNAVAILABLE; the
caller tries again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from prometheus_client import CollectorRegistry, Gauge

from fuzz.fsutil import write_json_atomic
from fuzz.orchestrate.connect import CA_FILE, INFO_FILE, read_ca_file
from fuzz.orchestrate.iam.service import SERVICE_NAME as IAM_SERVICE
from fuzz.orchestrate.leadership import LeaderLease
from fuzz.orchestrate.metrics import LEADER_HELP
from fuzz.orchestrate.service import ENROLL_METHOD, REGISTER_METHOD
from fuzz.orchestrate.service import SERVICE_NAME as ORCHESTRATOR_SERVICE
from fuzz.orchestrate.store_sql import DATABASE_ERRORS
from fuzz.orchestrate.streams import LAUNCH_METHOD
from fuzz.rpc.auth import HEALTH_SERVICE
from fuzz.rpc.client import STANDBY_ANSWER, ClientTls
from fuzz.rpc.forward import Relay, Target, relayed
from fuzz.rpc.server import ServerStartError, TlsFiles, start_server
from fuzz.rpc.statusweb import StatusListener, StatusListenError
from fuzz.spec.cluster import MetricsSpec

logger = logging.getLogger(__name__)

STANDBY_SERVICE = "fuzz.Standby"


AGENT_METHODS = frozenset({REGISTER_METHOD, ENROLL_METHOD, LAUNCH_METHOD})
"""The orchestrator's methods agents call: answered by a standby, never forwarded."""
LEADER_CHANGED = f"{STANDBY_ANSWER}: the leader changed during the call; try again"
RELAYED_CALLS_GRACE = 2.0
"""Seconds a standby that stops waits for the calls it relayed to end with their answer."""


class _Forward(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method but the health check and the agents': relayed to the leader; the
    agents': UNAVAILABLE, naming the leader."""

    def __init__(self, lease: LeaderLease, relay: Relay) -> None:
        self._lease = lease
        self._relay = relay

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method.startswith(f"/{HEALTH_SERVICE}/"):
            return None
        # a call relayed here already: the leader's recorded address led back to a
        # standby (a replica listening on 0.0.0.0 without an advertised address)
        refuse = method in AGENT_METHODS or relayed(handler_call_details.invocation_metadata)

        def answer(requests: Iterator[bytes], context: grpc.ServicerContext
                   ) -> Iterator[bytes]:
            # the store is read here, on the call's worker: service() runs on the
            # server's one thread that takes every call in
            yield from self._answer(method, refuse, requests, context)

        return grpc.stream_stream_rpc_method_handler(answer)

    def _answer(self, method: str, refuse: bool, requests: Iterator[bytes],
                context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            leader = self._lease.leader()
        except DATABASE_ERRORS as exc:
            logger.warning("cannot read the leader from the store: %s", exc)
            _unavailable(context, "the store does not answer; try again in a few seconds")
        if leader is None or not leader.live:
            _unavailable(context, "no replica leads at the moment; try again in a few seconds")
        if refuse:
            _unavailable(context, f"the leader is at {leader.address}")
        yield from self._relay.relay(method, Target(leader.address, leader.epoch), requests,
                                     context)


def _unavailable(context: grpc.ServicerContext, where: str) -> NoReturn:
    """End the call UNAVAILABLE: this is a standby, and ``where`` to go."""
    context.abort(grpc.StatusCode.UNAVAILABLE, f"{STANDBY_ANSWER}: {where}")


def _follow(lease: LeaderLease, relay: Relay) -> None:
    """Tell ``relay`` which leadership epoch is current (calls to an older one end)."""
    try:
        leader = lease.leader()
    except DATABASE_ERRORS as exc:
        logger.warning("cannot read the leader from the store: %s", exc)
        return
    relay.retarget(leader.epoch if leader is not None and leader.live else None)


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


@dataclass(frozen=True)
class StandbyServing:
    """How a standby serves: as the leader would (its TLS files, as many workers, the
    same largest message), in the data dir ``data_dir`` (the cluster CA's there)."""

    listen: str
    tls: TlsFiles | None
    workers: int
    max_message_bytes: int
    data_dir: Path


def stand_by(lease: LeaderLease, serving: StandbyServing, metrics: MetricsSpec,
             stop: threading.Event) -> bool:
    """Wait until this replica takes ``lease`` (True) or ``stop`` is set (False).

    Unless the lease is free at once, it serves on ``serving.listen`` meanwhile (see
    the module), and on the metrics listener, and records itself in
    ``DATA_DIR/server.json`` as a standby. Raises ServerStartError when it cannot listen.
    """
    if lease.try_take():
        return True
    data_dir = serving.data_dir
    relay = Relay(None if serving.tls is None else ClientTls(read_ca_file(data_dir / CA_FILE)),
                  serving.listen, LEADER_CHANGED, serving.max_message_bytes)
    running = start_server(
        serving.listen, lambda token: None,
        lambda server: server.add_generic_rpc_handlers((_Forward(lease, relay),)),
        STANDBY_SERVICE, tls=serving.tls, max_workers=serving.workers, serving=False,
        # the leader checks the caller's token (or, for Login, its code): not the standby
        open_methods=(ORCHESTRATOR_SERVICE, IAM_SERVICE),
        max_message_bytes=serving.max_message_bytes)
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
            _follow(lease, relay)
        return False
    finally:
        relay.close()
        # the calls relay.close() ended still have to say so (UNAVAILABLE, LEADER_CHANGED):
        # stop(0) cut them first on a loaded machine, and callers read a dropped connection
        running.server.stop(RELAYED_CALLS_GRACE).wait()
        if status is not None:
            status.stop()
        (data_dir / INFO_FILE).unlink(missing_ok=True)
