"""A stand-in orchestrator that records agents joining: proof that a bootstrap started one.

An agent started with ``--join ADDRESS`` registers (``RegisterNode``) with its
node name, endpoint, its own bearer token and its labels. :class:`JoinRecorder`
answers only that call (everything else is UNIMPLEMENTED) and keeps the
registrations by join token, so a test can wait for the agent a payload started
and then call it with the token it registered.

In plain text (the default) agents show their join token on every registration.
With ``tls=True`` the recorder plays a TLS cluster: it has its own CA
(:attr:`JoinRecorder.ca_pem`, to put in the node's ``JoinInfo``), serves TLS,
answers ``EnrollNode`` by certifying the agent's key, and records registrations
under the join token that agent enrolled with; :meth:`JoinRecorder.client_tls`
gives a certificate to call such an agent with (mutual TLS).
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
from fuzz.crypto import pki
from fuzz.rpc.client import ClientTls

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
    """RegisterNode (and EnrollNode with a CA); gRPC answers every other method UNIMPLEMENTED."""

    def __init__(self, authority: pki.CertificateAuthority | None) -> None:
        self.seen: dict[str, Registration] = {}
        self.changed = threading.Condition()
        self.authority = authority
        self.enrolled: dict[str, str] = {}  # node name -> the join token it enrolled with

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The methods, for ``server.add_generic_rpc_handlers``."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "RegisterNode": grpc.unary_unary_rpc_method_handler(
                self.register, request_deserializer=pb.RegisterNodeRequest.FromString,
                response_serializer=pb.RegisterNodeReply.SerializeToString),
            "EnrollNode": grpc.unary_unary_rpc_method_handler(
                self.enroll, request_deserializer=pb.EnrollNodeRequest.FromString,
                response_serializer=pb.EnrollNodeReply.SerializeToString),
        })

    def enroll(self, request: pb.EnrollNodeRequest, context: grpc.ServicerContext
               ) -> pb.EnrollNodeReply:
        """Certify the node's key (any join token is taken; the test checks which)."""
        if self.authority is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this recorder is plain text")
        cert = self.authority.sign_csr(request.csr, request.name,
                                       [pki.node_dns_name(request.name)])
        with self.changed:
            self.enrolled[request.name] = request.join_token
        return pb.EnrollNodeReply(certificate=pki.cert_pem(cert))

    def register(self, request: pb.RegisterNodeRequest, context: grpc.ServicerContext
                 ) -> pb.RegisterNodeReply:
        """Record the registration under its join token (the enrolled one, with TLS)."""
        with self.changed:
            join_token = self.enrolled.get(request.name, "") if request.certificate \
                else request.join_token
            registration = Registration(request.name, request.endpoint, request.agent_token,
                                        join_token, dict(request.labels))
            first = join_token not in self.seen
            self.seen[join_token] = registration
            self.changed.notify_all()
        return pb.RegisterNodeReply(first=first)


class JoinRecorder:
    """A RegisterNode endpoint on 127.0.0.1; ``address`` is what agents ``--join``."""

    def __init__(self, server: grpc.Server, service: _RecordingService, port: int) -> None:
        """Use :func:`join_recorder` to start one."""
        self._server = server
        self._service = service
        self.address = f"127.0.0.1:{port}"

    @property
    def ca_pem(self) -> str | None:
        """The recorder's CA (PEM) when it plays a TLS cluster."""
        authority = self._service.authority
        return authority.cert_pem.decode() if authority is not None else None

    def client_tls(self, node: str) -> ClientTls:
        """An orchestrator's certificate of the recorder's CA, to call node ``node``'s agent."""
        authority = self._service.authority
        if authority is None:
            raise ValueError("the recorder plays a plain-text cluster: no certificates")
        key = pki.new_key()
        cert = authority.issue(key.public_key(), "join-recorder", orchestrator=True)
        return ClientTls(authority.cert_pem, pki.cert_pem(cert), pki.key_pem(key),
                         pki.node_dns_name(node))

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
def join_recorder(tls: bool = False) -> Iterator[JoinRecorder]:
    """Run a :class:`JoinRecorder` (with its own CA and TLS, if ``tls``) for the block."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS),
                         options=(("grpc.so_reuseport", 0),))
    authority = pki.CertificateAuthority.create("join-recorder") if tls else None
    service = _RecordingService(authority)
    server.add_generic_rpc_handlers((service.handler(),))
    if authority is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        key = pki.new_key()
        cert = authority.issue(key.public_key(), "join-recorder", ["127.0.0.1"])
        credentials = grpc.ssl_server_credentials([(pki.key_pem(key), pki.cert_pem(cert))])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield JoinRecorder(server, service, port)
    finally:
        server.stop(grace=None)
