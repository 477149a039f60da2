"""Relaying gRPC calls, as bytes, to another server: a standby replica to its leader.

A :class:`Relay` answers a call by making the same call (same method, the caller's
metadata less the transport's headers, the same deadline) to a :class:`Target` and
passing the messages both ways untouched: requests and replies are never decoded
(identity serializers), and one stream-stream handler carries unary and streaming
methods alike, as they are the same on the wire. The target's replies, trailing
metadata, status code and details reach the caller unchanged; a caller cancelling
cancels the call to the target. A call made to one target *generation* (a leader's
epoch) ends UNAVAILABLE once :meth:`Relay.retarget` says another is current, or the
relay closes: the caller tries again, and reaches the new target.

Nothing of a call is logged or kept once it ends: the caller's bearer token passes
through this process in memory only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from fuzz.rpc.client import ClientTls, open_channel

NO_DEADLINE = 365 * 24 * 3600.0
"""Seconds left beyond which a call is taken to have no deadline (gRPC's server context
gives no deadline as a time far in the future, not as None)."""

VIA_KEY = "x-fuzz-via"
"""The metadata a relayed call carries: the relaying server's address (a relay that sees
it on a call knows the call was relayed once already, and relays no loop)."""
_TRANSPORT_HEADERS = frozenset({"user-agent", "te", "content-type", "host"})
Metadata = tuple[tuple[str, str | bytes], ...]


def relayed(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    """Whether a call with ``metadata`` was relayed to this server by another."""
    return any(key == VIA_KEY for key, _ in metadata or ())


def forwarded_metadata(metadata: Iterable[tuple[str, Any]] | None) -> Metadata:
    """The entries of a call's ``metadata`` that are the caller's own (its bearer token,
    say): those the HTTP/2 transport and gRPC set themselves are left out (a client may
    not send them; the relay's own channel sets its own)."""
    return tuple((key, value) for key, value in metadata or ()
                 if not key.startswith((":", "grpc-")) and key not in _TRANSPORT_HEADERS)


@dataclass(frozen=True)
class Target:
    """Where calls go now: a server's address, and its generation (a leader's epoch)."""

    address: str
    generation: int


@dataclass
class _InFlight:
    """One relayed call to the target: ended by the relay when its target is gone."""

    call: Any
    generation: int
    moved: bool = field(default=False)


class Relay:
    """Forwards calls to targets over TLS (``tls``: the CA the targets' certificates
    must be issued by) or plain text, each marked as relayed ``via`` this server's
    address (:data:`VIA_KEY`); a call whose target was replaced ends UNAVAILABLE with
    ``moved`` (one line) as its details."""

    def __init__(self, tls: ClientTls | None, via: str, moved: str,
                 max_message_bytes: int) -> None:
        """Replies up to ``max_message_bytes`` are relayed (the target's own limit)."""
        self._tls = tls
        self._via = via
        self._moved = moved
        self._options = (("grpc.max_receive_message_length", max_message_bytes),)
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._in_flight: dict[int, _InFlight] = {}
        self._generation: int | None = None

    def relay(self, method: str, target: Target, requests: Iterator[bytes],
              context: grpc.ServicerContext) -> Iterator[bytes]:
        """Answer the call under way (``requests``, ``context``: a stream-stream
        handler's) by calling ``method`` (``/package.Service/Method``) on ``target``:
        its replies, as they come."""
        left = context.time_remaining()
        call = self._channel(target.address).stream_stream(
            method, request_serializer=None, response_deserializer=None)(
            requests, metadata=(*forwarded_metadata(context.invocation_metadata()),
                                (VIA_KEY, self._via)),
            timeout=None if left is None or left > NO_DEADLINE else left)
        flight = _InFlight(call, target.generation)
        key = id(flight)
        with self._lock:
            self._in_flight[key] = flight
            stale = self._generation is not None and self._generation != target.generation
        if stale:
            self._end(flight)
        context.add_callback(call.cancel)  # the caller went away: so does the call
        try:
            yield from call
        except grpc.RpcError:  # the call itself: its code, details and trailers
            if flight.moved:
                context.abort(grpc.StatusCode.UNAVAILABLE, self._moved)
            context.set_trailing_metadata(forwarded_metadata(call.trailing_metadata()))
            context.abort(call.code(), call.details() or "")
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
        context.set_trailing_metadata(forwarded_metadata(call.trailing_metadata()))

    def _channel(self, address: str) -> grpc.Channel:
        """The channel to ``address``, opened on first use and kept."""
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = open_channel(address, self._tls, self._options)
                self._channels[address] = channel
            return channel

    @staticmethod
    def _end(flight: _InFlight) -> None:
        flight.moved = True
        flight.call.cancel()

    def retarget(self, generation: int | None) -> None:
        """``generation`` is current now (None: none is): calls made to another end."""
        with self._lock:
            self._generation = generation
            ending = [flight for flight in self._in_flight.values()
                      if flight.generation != generation]
        for flight in ending:
            self._end(flight)

    def close(self) -> None:
        """End every call in flight and close the channels."""
        with self._lock:
            ending = list(self._in_flight.values())
            channels = list(self._channels.values())
            self._channels.clear()
        for flight in ending:
            self._end(flight)
        for channel in channels:
            channel.close()
