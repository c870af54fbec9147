import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qsse_core import ErrorCode, LocalProtocolError, RemoteProtocolError
from qsse_core._framing import (
    LineBuffer,
    decode_frame,
    decode_offer,
    encode_error,
    encode_event,
    encode_offer,
)
from qsse_core.events import ErrorReceived, EventReceived

# -- golden bytes from the Go peer ----------------------------------------------------------


def test_offer_golden():
    assert (
        encode_offer("secret", ["ride.passenger.start", "ride.*"])
        == b'{"token":"secret","topics":["ride.passenger.start","ride.*"]}\n'
    )
    assert encode_offer("secret", ["a", "nope", "c"]) == (
        b'{"token":"secret","topics":["a","nope","c"]}\n'
    )


def test_offer_omits_empty_keys_like_go():
    assert encode_offer("", []) == b"{}\n"
    assert encode_offer("", ["a"]) == b'{"topics":["a"]}\n'


def test_event_golden():
    assert (
        encode_event("ride.passenger.start", b'{"ride_id":"1"}')
        == b'{"topic":"ride.passenger.start","data":"eyJyaWRlX2lkIjoiMSJ9"}\n'
    )


def test_empty_payload_omits_data_like_go():
    assert encode_event("a", b"") == b'{"topic":"a"}\n'


def test_200_byte_payload_makes_296_byte_line_like_go():
    assert len(encode_event("bench", b"x" * 200)) == 296


def test_error_event_golden():
    line = encode_error(ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "ride.unknown"})
    outer = json.loads(line)
    assert outer["topic"] == "error"
    assert base64.b64decode(outer["data"]) == b'{"code":2,"data":{"topic":"ride.unknown"}}'
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_decode_go_event_with_escapes():
    # Go's encoder writes <, > and & as \u003c etc.
    line = b'{"topic":"a\\u003cb\\u003e\\u0026","data":"aGk="}'
    assert decode_frame(line) == EventReceived(topic="a<b>&", data=b"hi")


def test_decode_event_without_data():
    assert decode_frame(b'{"topic":"a"}') == EventReceived(topic="a", data=b"")


def test_decode_ignores_unknown_keys_like_go():
    assert decode_frame(b'{"topic":"a","data":"aGk=","x":1}') == EventReceived("a", b"hi")


def test_decode_error_event():
    line = encode_error(1, {"topic": "secret"}).rstrip(b"\n")
    assert decode_frame(line) == ErrorReceived(code=1, data={"topic": "secret"})


def test_decode_offer_golden():
    offer = decode_offer(b'{"token":"secret","topics":["a","nope","c"]}')
    assert offer.token == "secret"
    assert offer.topics == ["a", "nope", "c"]
    assert decode_offer(b"{}").topics == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"hello", "malformed offer: JSON is malformed: invalid character (byte 0)"),
        (b"[1,2]", "malformed offer: Expected `object`, got `array`"),
        (b'{"token":5}', "malformed offer: Expected `str`, got `int` - at `$.token`"),
        (
            b'{"Topics":["a",3]}',
            "malformed offer: Expected `str`, got `int` - at `$.Topics[1]`",
        ),
        (b'{"topics":"a"}', "malformed offer: Expected `array`, got `str` - at `$.topics`"),
    ],
)
def test_malformed_offer_messages(line, message):
    with pytest.raises(RemoteProtocolError) as info:
        decode_offer(line)
    assert str(info.value) == message
    assert info.value.error_code == ErrorCode.MALFORMED_OFFER


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            b'{"topic":"a","data":"!!"}',
            "malformed event: Invalid base64 encoded string - at `$.data`",
        ),
        (b'{"topic":1}', "malformed event: Expected `str`, got `int` - at `$.topic`"),
        (
            b'{"topic":"error","data":"e30="}',
            "malformed error event: Object missing required field `code`",
        ),
    ],
)
def test_malformed_frame_messages(line, message):
    with pytest.raises(RemoteProtocolError) as info:
        decode_frame(line)
    assert str(info.value) == message
    assert info.value.error_code == ErrorCode.MALFORMED_FRAME


# -- properties ------------------------------------------------------------------------------

# Strings that UTF-8 can carry: lone surrogates are rejected by the encoders (tested below).
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
topics = text.filter(lambda t: t and t != "error")


@given(topic=topics, data=st.binary())
def test_event_roundtrip(topic, data):
    line = encode_event(topic, data)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert decode_frame(line[:-1]) == EventReceived(topic=topic, data=data)


@given(token=text, names=st.lists(text))
def test_offer_roundtrip(token, names):
    offer = decode_offer(encode_offer(token, names)[:-1])
    assert (offer.token, offer.topics) == (token, names)


@given(code=st.integers(-(2**63), 2**63 - 1), key=text, value=text)
def test_error_roundtrip(code, key, value):
    line = encode_error(code, {key: value})
    assert decode_frame(line[:-1]) == ErrorReceived(code=code, data={key: value})


@given(st.binary())
def test_decoders_raise_only_protocol_errors(raw):
    for decode in (decode_frame, decode_offer):
        with contextlib.suppress(RemoteProtocolError):
            decode(raw)


def test_unencodable_strings_are_local_errors():
    with pytest.raises(LocalProtocolError, match="offer is not valid UTF-8"):
        encode_offer("\ud800", [])
    with pytest.raises(LocalProtocolError, match="is not valid UTF-8"):
        encode_event("\ud800", b"")


@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cut=st.integers(1, 7),
)
def test_line_buffer_any_chunking(lines, cut):
    stream = b"".join(line + b"\n" for line in lines)
    buf = LineBuffer(max_line=1000)
    out = []
    for i in range(0, len(stream), cut):
        got, dropped = buf.feed(stream[i : i + cut])
        assert dropped == 0
        out += got
    assert out == lines
    assert buf.pending == 0


def test_line_buffer_skips_oversized_lines_and_resyncs():
    buf = LineBuffer(max_line=4)
    assert buf.feed(b"ok\n1234") == ([b"ok"], 0)
    assert buf.feed(b"5678") == ([], 1)  # over the limit: dropped once, memory released
    assert buf.pending == 0
    assert buf.feed(b"9999\nfine\n") == ([b"fine"], 0)
    assert buf.feed(b"toolong\nok\n") == ([b"ok"], 1)


def _nested(depth: int) -> bytes:
    """A JSON array ``depth`` levels deep, with brackets inside a string that do not count."""
    return b"[" * (depth - 1) + b'["[[[[{{{{"' + b"]" * depth


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_json_nested_past_the_depth_bound_is_the_protocol_error(depth):
    offer = b'{"token":"t","x":' + _nested(depth - 1) + b"}"
    with pytest.raises(RemoteProtocolError) as info:
        decode_offer(offer)
    assert (info.value.error_code, info.value.reason) == (
        ErrorCode.MALFORMED_OFFER,
        "malformed offer: JSON nested deeper than 64 levels",
    )
    event = b'{"topic":"a","data":"aGk=","x":' + _nested(depth - 1) + b"}"
    with pytest.raises(RemoteProtocolError, match="malformed event: JSON nested deeper"):
        decode_frame(event)
    error = encode_error(ErrorCode.UNKNOWN, {"x": json.loads(_nested(62))})[:-1]
    # Error data is JSON inside the event's base64: its depth counts on its own.
    assert decode_frame(error) == ErrorReceived(
        code=ErrorCode.UNKNOWN, data={"x": json.loads(_nested(62))}
    )
    inner = b'{"code":5,"data":{"x":' + _nested(depth) + b"}}"
    line = encode_event("error", inner)[:-1]
    with pytest.raises(RemoteProtocolError, match="malformed error event: JSON nested deeper"):
        decode_frame(line)


def test_json_at_the_depth_bound_decodes():
    offer = b'{"token":"t","topics":["a"],"x":' + _nested(63) + b"}"
    assert decode_offer(offer).topics == ["a"]


@pytest.mark.parametrize("msgpack", [False, True])
def test_typed_payloads_nested_past_the_depth_bound_are_a_value_error(msgpack):
    # A typed subscriber reports the payload as INVALID_PAYLOAD rather than crash on it.
    from generated import rides
    from qsse_core._framing2 import ContentType
    from qsse_core.testing import deep_json, deep_msgpack

    if msgpack:
        data = b"\x81\xa5state" + deep_msgpack(1000)
        content_type = ContentType.MSGPACK
    else:
        data = b'{"state":' + deep_json(1000) + b"}"
        content_type = ContentType.JSON
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        rides.RIDE_STATUS.decode(data, content_type)


# -- byte-level parity with Go's encoding/json ------------------------------------------------


@pytest.mark.parametrize(
    ("line", "token", "topics"),
    [
        (b'{"Topics":["a"]}', "", ["a"]),  # keys match case-insensitively
        (b'{"TOKEN":"t","tOpIcS":["a","b"]}', "t", ["a", "b"]),
        (b'{"topics":["a"],"token":null}', "", ["a"]),  # null leaves a field empty
        (b'{"topics":null}', "", []),
        (b'{"topics":["a",null]}', "", ["a", ""]),  # a null string element is ""
        (b"null", "", []),  # null into a struct is a no-op
        (b'{"token":"a","Token":"b"}', "b", []),  # the last matching key wins
        (b'{"topics":["a"],"extra":{"deep":[[[[1]]]]}}', "", ["a"]),  # unknown keys ignored
        (b'{"topics":["\\u003c\\u0026"]}', "", ["<&"]),
    ],
)
def test_offers_are_read_as_gos_decoder_reads_them(line, token, topics):
    offer = decode_offer(line)
    assert (offer.token, offer.topics) == (token, topics)


def test_strings_are_escaped_as_go_escapes_them():
    # Go's json.Marshal escapes <, >, & and U+2028/U+2029 inside strings.
    assert encode_event("a<b>&c\u2028\u2029", b"") == (
        b'{"topic":"a\\u003cb\\u003e\\u0026c\\u2028\\u2029"}\n'
    )
    assert encode_offer("t&", ["<x>"]) == b'{"token":"t\\u0026","topics":["\\u003cx\\u003e"]}\n'
    line = encode_error(ErrorCode.TOPIC_NOT_AVAILABLE, {"topic": "<x>"})
    nested = base64.b64decode(json.loads(line)["data"])
    assert nested == b'{"code":2,"data":{"topic":"\\u003cx\\u003e"}}'
    # Plain topics take the fast path and are unchanged.
    assert encode_event("ride.1", b"hi") == b'{"topic":"ride.1","data":"aGk="}\n'
    for topic in ("a<b", "\u2028", "&&"):
        assert decode_frame(encode_event(topic, b"x")[:-1]) == EventReceived(topic=topic, data=b"x")
