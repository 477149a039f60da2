"""The port-forward data frames made and read by hand are PortForwardFrame's wire format."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from fuzz.api import orchestrator_pb2, substrate_pb2
from fuzz.rpc.tunnel import (
    END_FRAME,
    data_frame,
    data_request,
    read_frame,
    request_frame,
    serialized,
)

# lengths around each varint size boundary, and a chunk as large as the tunnel's
SIZES = (0, 1, 127, 128, 16383, 16384, 1 << 20, (1 << 21) + 3)


def _chunk(size: int) -> bytes:
    return bytes(index % 251 for index in range(size))


@pytest.mark.parametrize("size", SIZES)
def test_a_data_frame_is_the_message_protobuf_writes_and_reads(size: int) -> None:
    chunk = _chunk(size)
    frame = data_frame(chunk)
    assert frame == substrate_pb2.PortForwardFrame(data=chunk).SerializeToString()
    assert substrate_pb2.PortForwardFrame.FromString(frame).data == chunk
    view = read_frame(frame)
    assert isinstance(view, memoryview) and view.obj is frame, "a view, not a copy"
    assert bytes(view) == chunk


@pytest.mark.parametrize("size", SIZES)
def test_a_data_request_carries_the_frame_alone(size: int) -> None:
    chunk = _chunk(size)
    request = data_request(chunk)
    assert request == orchestrator_pb2.PortForwardRequest(
        frame=substrate_pb2.PortForwardFrame(data=chunk)).SerializeToString()
    assert request_frame(request) == data_frame(chunk)


def test_other_frames_and_requests_are_parsed() -> None:
    end = read_frame(END_FRAME)
    assert isinstance(end, substrate_pb2.PortForwardFrame) and end.end
    opening = substrate_pb2.PortForwardFrame(open=substrate_pb2.PortForwardOpen(port=80))
    parsed = read_frame(opening.SerializeToString())
    assert isinstance(parsed, substrate_pb2.PortForwardFrame) and parsed.open.port == 80
    first = orchestrator_pb2.PortForwardRequest(workflow="w", task="t", frame=opening)
    assert request_frame(first.SerializeToString()) is None, "the first request is parsed"
    assert serialized(first) == first.SerializeToString()
    assert serialized(b"as is") == b"as is"


def test_a_data_frame_written_another_way_is_still_read_as_data() -> None:
    # a peer may write the same message differently: here, data with an unknown field after it
    odd = data_frame(b"abc") + b"\x28\x01"  # field 5, varint 1
    view = read_frame(odd)
    assert isinstance(view, memoryview) and bytes(view) == b"abc"
    truncated = data_frame(b"abcdef")[:-2]
    with pytest.raises(DecodeError):
        read_frame(truncated)
