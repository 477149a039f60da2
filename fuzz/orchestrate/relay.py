"""Relaying exec and port-forward streams between a client and the agent running the task.

The orchestrator is a pass-through: the client's messages go to the agent of the
task's first node unchanged but for the container id filled into the first one,
and the agent's come back unchanged. When the client goes away the agent's call
is cancelled (so the agent kills the process or closes the connection); when
the agent's call fails, the client's ends with the agent's status where it is
about the request, and FAILED_PRECONDITION naming the agent otherwise.

:func:`direct_ticket` is the direct path instead: the agent is given a single-use
ticket's hash for the port (or for the whole exec request: command, env, cwd, tty),
the client the ticket and the agent's direct TLS address (see :mod:`fuzz.rpc.direct`,
:mod:`fuzz.rpc.direct_exec`); no byte passes the orchestrator.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc

from fuzz.api import orchestrator_pb2, substrate_pb2
from fuzz.clients.agent import AgentClient, AgentError
from fuzz.rpc.client import DuplexCall
from fuzz.rpc.direct import TICKET_BYTES

_Reply = TypeVar("_Reply")
# Statuses that describe the request, passed on as they are; the others (the agent
# unreachable, refusing the orchestrator's token) are the orchestrator's problem.
PASSED_ON = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
})
# A ticket is redeemed within seconds of its grant: the CLI asks for one per connection.
TICKET_TTL_SECONDS = 10.0


@dataclass(frozen=True)
class LiveTask:
    """A running task as the relay needs it: its first node's agent and its container there."""

    agent: AgentClient
    container: str
    user: str = ""  # who asked (a direct ticket is granted to them)


def relay_exec(task: LiveTask, start: substrate_pb2.ExecInput,
               rest: Iterator[substrate_pb2.ExecInput],
               context: grpc.ServicerContext) -> Iterator[substrate_pb2.ExecOutput]:
    """Relay an exec: ``start`` (container id filled in), then ``rest``; the outputs back."""
    first = substrate_pb2.ExecInput()
    first.CopyFrom(start)
    first.start.container_id = task.container
    yield from _relay(task.agent.exec(itertools.chain((first,), rest)), context)


def relay_port_forward(task: LiveTask, opening: substrate_pb2.PortForwardFrame,
                       rest: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    """Relay a forwarded connection: ``opening`` (container id filled in), then ``rest``.

    Frames go both ways serialized, as the client and the agent sent them (the
    data path parses nothing: see
    :func:`~fuzz.orchestrate.service.add_orchestrator_service`).
    """
    first = substrate_pb2.PortForwardFrame()
    first.CopyFrom(opening)
    first.open.container_id = task.container
    yield from _relay(task.agent.port_forward(
        itertools.chain((first.SerializeToString(),), rest)), context)


def direct_ticket(task: LiveTask, port: int, context: grpc.ServicerContext,
                  exec_start: substrate_pb2.ExecStart | None = None
                  ) -> orchestrator_pb2.DirectTicket:
    """A single-use ticket for one connection to ``port`` of the task, or (``exec_start``,
    port 0) for running that process in it, straight to its agent; an empty one (port 0)
    when the agent has no direct path (no TLS)."""
    tls = task.agent.tls
    if tls is None:
        return orchestrator_pb2.DirectTicket()
    ticket = secrets.token_bytes(TICKET_BYTES)
    try:
        direct_port = task.agent.grant_access(hashlib.sha256(ticket).digest(), task.container,
                                              port, task.user, TICKET_TTL_SECONDS,
                                              exec_start=exec_start)
    except AgentError as exc:
        _abort_for(context, exc)
    if not direct_port:
        return orchestrator_pb2.DirectTicket()
    host = task.agent.endpoint.rpartition(":")[0].strip("[]")
    return orchestrator_pb2.DirectTicket(ticket=ticket, host=host, port=direct_port,
                                         server_name=tls.server_name or host,
                                         ca_pem=tls.ca_pem)


def _relay(call: DuplexCall[_Reply], context: grpc.ServicerContext) -> Iterator[_Reply]:
    context.add_callback(call.cancel)
    try:
        yield from call
    except AgentError as exc:
        _abort_for(context, exc)


def _abort_for(context: grpc.ServicerContext, exc: AgentError) -> NoReturn:
    if exc.code is not None and exc.code in PASSED_ON:
        context.abort(exc.code, exc.details)
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
