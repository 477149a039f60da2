"""The relay a standby replica forwards calls with (fuzz/rpc/forward.py), between real
gRPC servers on 127.0.0.1: a caller, the relay's server, and a target server whose
methods take and give raw bytes.

The target's answers (messages, trailing metadata, code, details) reach the caller
unchanged, the caller's metadata reaches the target without the transport's headers,
cancelling either way ends the other side, and a call to a replaced target generation
ends UNAVAILABLE with the relay's line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from fuzz.rpc.forward import VIA_KEY, Relay, Target
from tests.support.orchestratorutil import wait_until

MOVED = "the target changed during the call; try again"
TOKEN = ("authorization", "Bearer sesame")


class _Target(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """``/t.T/Echo`` (unary: the request and the caller's metadata keys back),
    ``/t.T/Deny`` (PERMISSION_DENIED with trailers), ``/t.T/Ticks`` (a server stream of
    ``n`` ticks, then open until cancelled)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.seen: list[tuple[str, Any]] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return {"/t.T/Echo": grpc.unary_unary_rpc_method_handler(self._echo),
                "/t.T/Deny": grpc.unary_unary_rpc_method_handler(self._deny),
                "/t.T/Ticks": grpc.unary_stream_rpc_method_handler(self._ticks),
                }.get(details.method)

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.seen = list(context.invocation_metadata())
        context.set_trailing_metadata((("x-answer", "42"),))
        return b"echo:" + request

    def _deny(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-why", "policy"),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied: not yours")
        return b""

    def _ticks(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(self.cancelled.set)
        for index in range(int(request)):
            yield f"tick {index}".encode()
        while context.is_active():
            self.cancelled.wait(0.05)


def _server(handler: grpc.GenericRpcHandler) -> tuple[grpc.Server, str]:  # type: ignore[type-arg]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


class _Relaying(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every call: forwarded by ``relay`` to the target of generation 1."""

    def __init__(self, relay: Relay, address: str) -> None:
        self._relay, self._address = relay, address

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        target = Target(self._address, 1)

        def relay(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            yield from self._relay.relay(details.method, target, requests, context)

        return grpc.stream_stream_rpc_method_handler(relay)


@pytest.fixture
def relayed() -> Iterator[tuple[_Target, Relay, grpc.Channel]]:
    """The target, the relay, and a caller's channel to the relay's server."""
    target = _Target()
    target_server, target_address = _server(target)
    relay = Relay(None, "replica-b:7400", MOVED, 4 * 1024 * 1024)
    relay_server, relay_address = _server(_Relaying(relay, target_address))
    channel = grpc.insecure_channel(relay_address,
                                    options=(("grpc.primary_user_agent", "caller/1"),))
    try:
        yield target, relay, channel
    finally:
        channel.close()
        relay.close()
        relay_server.stop(0).wait()
        target_server.stop(0).wait()


def test_a_unary_call_and_its_trailers_pass_unchanged_with_the_callers_metadata(
        relayed: tuple[_Target, Relay, grpc.Channel]) -> None:
    target, _, channel = relayed
    reply, call = channel.unary_unary("/t.T/Echo").with_call(
        b"hello", metadata=(TOKEN, ("x-trace", "abc")), timeout=10)
    assert reply == b"echo:hello"
    assert ("x-answer", "42") in call.trailing_metadata()
    assert TOKEN in target.seen and ("x-trace", "abc") in target.seen
    assert (VIA_KEY, "replica-b:7400") in target.seen  # relayed once: never again
    agents = [value for key, value in target.seen if key == "user-agent"]
    assert len(agents) == 1 and "caller/1" not in agents[0]  # a transport header: the relay's


def test_a_refusal_keeps_its_code_details_and_trailers(
        relayed: tuple[_Target, Relay, grpc.Channel]) -> None:
    _, _, channel = relayed
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/t.T/Deny")(b"", metadata=(TOKEN,), timeout=10)
    call: Any = raised.value
    assert call.code() == grpc.StatusCode.PERMISSION_DENIED
    assert call.details() == "permission denied: not yours"
    assert ("x-why", "policy") in call.trailing_metadata()


def test_an_unknown_method_is_the_targets_unimplemented(
        relayed: tuple[_Target, Relay, grpc.Channel]) -> None:
    _, _, channel = relayed
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/t.T/Nothing")(b"", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_a_caller_cancelling_a_stream_cancels_the_targets_call(
        relayed: tuple[_Target, Relay, grpc.Channel]) -> None:
    target, _, channel = relayed
    ticks = channel.unary_stream("/t.T/Ticks")(b"3", metadata=(TOKEN,))
    assert [next(ticks) for _ in range(3)] == [b"tick 0", b"tick 1", b"tick 2"]
    ticks.cancel()
    wait_until("the target's call to be cancelled", target.cancelled.is_set, timeout=10)


def test_a_new_generation_ends_a_call_to_the_old_one_unavailable(
        relayed: tuple[_Target, Relay, grpc.Channel]) -> None:
    target, relay, channel = relayed
    ticks = channel.unary_stream("/t.T/Ticks")(b"1", metadata=(TOKEN,), timeout=30)
    assert next(ticks) == b"tick 0"
    relay.retarget(2)
    with pytest.raises(grpc.RpcError) as raised:
        next(ticks)
    call: Any = raised.value
    assert (call.code(), call.details()) == (grpc.StatusCode.UNAVAILABLE, MOVED)
    wait_until("the target's call to be cancelled", target.cancelled.is_set, timeout=10)
