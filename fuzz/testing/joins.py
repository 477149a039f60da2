"""A stand-in orchestrator that records agents joining: proof that a bootstrap started one.

An agent started with ``--join ADDRESS`` registers (``RegisterNode``) with its
node name, endpoint, its own bearer token, the join token it was created with and
its labels. :class:`JoinRecorder` answers only that call (everything else is
UNIMPLEMENTED) and keeps the registrations, so a test can wait for the agent a
payload started and then call it with the token it registered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from fuzz.api import orchestrator_pb2 as pb

WORKERS = 4
SERVICE = "fuzz.orchestrator.v1.Orchestrator"


@dataclass(frozen=True)
class Registration:
    """What an agent said when it joined."""

    name: str
    endpoint: str
    agent_token: str
    join_token: str
    labels: Mapping[str, str]


class _RecordingService:
    """RegisterNode only; gRPC answers every other method UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.seen: dict[str, Registration] = {}
        self.changed = threading.Condition()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The one method, for ``server.add_generic_rpc_handlers``."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "RegisterNode": grpc.unary_unary_rpc_method_handler(
                self.register, request_deserializer=pb.RegisterNodeRequest.FromString,
                response_serializer=pb.RegisterNodeReply.SerializeToString),
        })

    def register(self, request: pb.RegisterNodeRequest, context: grpc.ServicerContext
                 ) -> pb.RegisterNodeReply:
        """Record the registration under its join token."""
        registration = Registration(request.name, request.endpoint, request.agent_token,
                                    request.join_token, dict(request.labels))
        with self.changed:
            first = request.join_token not in self.seen
            self.seen[request.join_token] = registration
            self.changed.notify_all()
        return pb.RegisterNodeReply(first=first)


class JoinRecorder:
    """A RegisterNode endpoint on 127.0.0.1; ``address`` is what agents ``--join``."""

    def __init__(self, server: grpc.Server, service: _RecordingService, port: int) -> None:
        """Use :func:`join_recorder` to start one."""
        self._server = server
        self._service = service
        self.address = f"127.0.0.1:{port}"

    def wait_for(self, join_token: str, timeout: float) -> Registration | None:
        """The registration made with ``join_token``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._service.changed:
            while join_token not in self._service.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._service.changed.wait(left)
            return self._service.seen[join_token]


@contextmanager
def join_recorder() -> Iterator[JoinRecorder]:
    """Run a :class:`JoinRecorder` for the duration of the block."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS),
                         options=(("grpc.so_reuseport", 0),))
    service = _RecordingService()
    server.add_generic_rpc_handlers((service.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield JoinRecorder(server, service, port)
    finally:
        server.stop(grace=None)
