"""The qsse/2 codec: golden bytes, roundtrips, and arbitrary input."""

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsse_core import ErrorCode, LocalProtocolError, RemoteProtocolError
from qsse_core._framing2 import (
    MAX_EPOCH,
    MAX_WIRE_INT,
    FrameReader,
    FrameType,
    GapFrame,
    Hello,
    StreamHeader,
    Subscribe,
    SubscribeResult,
    decode_control,
    decode_event,
    decode_varint,
    encode_control,
    encode_event_frame,
    encode_varint,
)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [  # RFC 9000 appendix A.1 examples
        (37, bytes.fromhex("25")),
        (15293, bytes.fromhex("7bbd")),
        (494878333, bytes.fromhex("9d7f3e7d")),
        (151288809941952652, bytes.fromhex("c2197c5eff14e88c")),
    ],
)
def test_varint_rfc9000_vectors(value, encoded):
    assert encode_varint(value) == encoded
    assert decode_varint(encoded, 0) == (value, len(encoded))


def test_varint_too_large():
    with pytest.raises(LocalProtocolError, match="does not fit a QUIC varint"):
        encode_varint(1 << 62)


def test_event_frame_golden():
    frame = encode_event_frame(5, 1, "ride.42.status", b'{"s":1}')
    # type 0x22, length 23, id 5, content type 1 (JSON), topic length 14, topic, data
    assert frame == bytes([0x22, 24, 5, 1, 14]) + b"ride.42.status" + b'{"s":1}'
    assert decode_event(frame[2:]) == decode_event(bytes([5, 1, 14]) + b'ride.42.status{"s":1}')
    event = decode_event(frame[2:])
    assert (event.id, event.content_type, event.topic, event.data) == (
        5,
        1,
        "ride.42.status",
        b'{"s":1}',
    )


def test_control_frame_golden():
    assert encode_control(Hello(token="t")) == bytes([0x01, 9]) + b"\x81\xa5token\xa1t"
    assert encode_control(Hello()) == bytes([0x01, 1]) + b"\x80"


@pytest.mark.parametrize(
    ("frame_type", "payload", "message"),
    [
        (
            FrameType.HELLO,
            b"\xc1",
            "malformed HELLO frame: MessagePack data is malformed: invalid opcode '\\xc1' (byte 0)",
        ),
        (
            FrameType.SUBSCRIBE,
            b"\x80",
            "malformed SUBSCRIBE frame: Object missing required field `request_id`",
        ),
        (
            FrameType.SUBSCRIBE,
            encode_control(Hello(token="x"))[2:],
            "malformed SUBSCRIBE frame: Object missing required field `request_id`",
        ),
    ],
)
def test_malformed_control_frames(frame_type, payload, message):
    with pytest.raises(RemoteProtocolError) as info:
        decode_control(frame_type, payload)
    assert str(info.value) == message
    assert info.value.error_code == ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "malformed EVENT frame: payload ends inside the id"),
        (b"\x05", "malformed EVENT frame: payload ends inside the content type"),
        (b"\x05\x01\x09ab", "malformed EVENT frame: topic length 9 exceeds the payload"),
        (
            b"\x05\x01\x01\xff",
            "malformed EVENT frame: topic is not UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
)
def test_malformed_event_frames(payload, message):
    with pytest.raises(RemoteProtocolError) as info:
        decode_event(payload)
    assert str(info.value) == message


@given(
    event_id=st.integers(0, (1 << 62) - 1), ctype=st.integers(0, 3), topic=text, data=st.binary()
)
def test_event_roundtrip(event_id, ctype, topic, data):
    frame = encode_event_frame(event_id, ctype, topic, data)
    frames = FrameReader(1 << 20).feed(frame)
    assert len(frames) == 1
    frame_type, payload, _ = frames[0]
    assert payload is not None
    assert frame_type == FrameType.EVENT
    event = decode_event(payload)
    assert (event.id, event.content_type, event.topic, event.data) == (event_id, ctype, topic, data)


@given(
    request_id=st.integers(0, MAX_WIRE_INT),
    topic=text,
    last_id=st.none() | st.integers(0, MAX_WIRE_INT),
    epoch=st.none() | st.integers(0, MAX_EPOCH),
)
def test_control_roundtrip(request_id, topic, last_id, epoch):
    message = Subscribe(request_id=request_id, topic=topic, last_id=last_id, epoch=epoch)
    frame_type, payload, _ = FrameReader(1 << 20).feed(encode_control(message))[0]
    assert decode_control(frame_type, payload) == message


@given(
    field=st.sampled_from(["request_id", "last_id", "epoch"]),
    value=st.integers(MAX_EPOCH + 1, 2**64 - 1) | st.integers(-(2**63), -1),
    small=st.integers(MAX_WIRE_INT + 1, MAX_EPOCH),
)
def test_integers_out_of_range_are_malformed_before_anything_uses_them(field, value, small):
    # Ids and counts stop at the largest varint (an EVENT id), epochs at int64; so the server
    # can always encode last_id + 1 in a GAP.
    fields = {"request_id": 1, "topic": "t", "last_id": 1, "epoch": 1, field: value}
    with pytest.raises(RemoteProtocolError, match=r"malformed SUBSCRIBE frame: Expected `int`"):
        decode_control(FrameType.SUBSCRIBE, msgspec.msgpack.encode(fields))
    if field != "epoch":
        fields[field] = small
        with pytest.raises(RemoteProtocolError, match=r"<= 4611686018427387903"):
            decode_control(FrameType.SUBSCRIBE, msgspec.msgpack.encode(fields))


@given(
    messages=st.lists(
        st.builds(StreamHeader, subscription_id=st.integers(0, 1000), topic=text)
        | st.builds(GapFrame, topic=text, first_id=st.integers(0, 10**9))
        | st.builds(
            SubscribeResult,
            request_id=st.integers(0, 1000),
            status=st.integers(0, 4),
            topic=text,
        ),
        max_size=8,
    ),
    cut=st.integers(1, 9),
)
def test_reader_any_chunking(messages, cut):
    stream = b"".join(encode_control(m) for m in messages)
    reader = FrameReader(1 << 20)
    got = []
    for i in range(0, len(stream), cut):
        frames = reader.feed(stream[i : i + cut])
        assert all(p is not None for _, p, _ in frames)
        got += [decode_control(t, p) for t, p, _ in frames]
    assert got == messages
    assert reader.pending == 0


def test_reader_skips_oversized_frames_by_length():
    reader = FrameReader(max_frame_size=10)
    big = encode_event_frame(1, 0, "t", b"x" * 100)
    small = encode_control(Hello(token="ok"))
    # Reported once, in stream order, with its declared payload length.
    assert reader.feed(big[:50]) == [(FrameType.EVENT, None, 104)]
    assert reader.pending > 0
    frames = reader.feed(big[50:] + small)
    assert [decode_control(t, p) for t, p, _ in frames] == [Hello(token="ok")]
    assert reader.pending == 0


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 16))
def test_arbitrary_bytes_never_raise_other_errors_nor_hang(raw, cut):
    reader = FrameReader(max_frame_size=64)
    for i in range(0, len(raw), cut):
        for frame_type, payload, _ in reader.feed(raw[i : i + cut]):
            if payload is None:
                continue
            with contextlib.suppress(RemoteProtocolError):
                if frame_type == FrameType.EVENT:
                    decode_event(payload)
                elif frame_type in FrameType._value2member_map_ and frame_type != FrameType.EVENT:
                    decode_control(frame_type, payload)
        # Memory stays bounded by one frame whatever the input declares.
        assert len(reader._buf) <= 64 + 16


@pytest.mark.parametrize("frame_type", [FrameType.HELLO, FrameType.SUBSCRIBE, FrameType.GAP])
def test_nesting_past_the_depth_bound_is_malformed_not_a_recursion_error(frame_type):
    # A map whose unknown key holds arrays nested 64 levels (the bound) decodes as far as
    # nesting goes; one level more, or a thousand, is the protocol's error.
    def frame(depth):
        inner = b"\x91" * (depth - 2) + b"\x90"  # depth - 1 arrays inside the map
        return b"\x81" + msgspec.msgpack.encode("zz") + inner

    if frame_type == FrameType.HELLO:  # every field has a default
        assert decode_control(frame_type, frame(64)) == Hello()
    else:  # within the bound: only the missing fields are wrong
        with pytest.raises(RemoteProtocolError, match="missing required field"):
            decode_control(frame_type, frame(64))
    for depth in (65, 1000, 100_000):
        with pytest.raises(RemoteProtocolError, match="nested deeper than 64 levels") as info:
            decode_control(frame_type, frame(depth))
        assert info.value.error_code == ErrorCode.MALFORMED_FRAME
