"""The codec: frames to messages and back, the size limit, and the errors it raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import (
    FrameTooLarge,
    MalformedFrame,
    ProtocolError,
    RemoteProtocolError,
    UnknownMessageType,
)
from protocol.messages import Call, DiagRequest, Error, Hello, Message, Ping, Reply, Result
from tests.protocol.wire import SAMPLES, make_controller, message_types

# -- round trips ------------------------------------------------------------------------


def test_the_samples_cover_every_message_type() -> None:
    assert sorted(m.type for m in SAMPLES) == sorted(message_types())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type)
def test_every_message_type_survives_a_round_trip(message: Message) -> None:
    frame = codec.encode(message)
    decoded = codec.decode(frame)
    assert decoded == message
    assert type(decoded) is type(message)
    assert codec.encode(decoded) == frame


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.type)
def test_bytes_frames_decode_like_text_frames(message: Message) -> None:
    assert codec.decode(codec.encode(message).encode("utf-8")) == message


def test_a_frame_is_one_flat_json_object_with_the_envelope_beside_the_body() -> None:
    hello = SAMPLES[0]
    assert isinstance(hello, Hello)
    frame = json.loads(codec.encode(hello))
    assert list(frame)[:4] == ["v", "id", "reply_to", "type"]
    assert frame["v"] == 1
    assert frame["challenge"] == hello.challenge


def test_exact_frame_of_a_ping() -> None:
    assert codec.encode(Ping(id="abc")) == '{"v":1,"id":"abc","reply_to":null,"type":"ping"}'


def test_exact_frame_of_a_result() -> None:
    result = Result(
        id="r1",
        reply_to="p1",
        ok=True,
        data={"a": [1, 2.5, None]},
        produced_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert codec.encode(result) == (
        '{"v":1,"id":"r1","reply_to":"p1","type":"result","ok":true,'
        '"data":{"a":[1,2.5,null]},"error":null,"produced_at":"2024-01-02T03:04:05Z"}'
    )


def test_decoding_a_hand_written_frame_fills_the_defaults() -> None:
    decoded = codec.decode('{"v":1,"id":"x1","type":"diag_request"}')
    assert isinstance(decoded, DiagRequest)
    assert decoded.id == "x1"
    assert decoded.reply_to is None
    assert decoded.collectors is None


# -- the size limit ---------------------------------------------------------------------


def _padded_reply(size: int) -> str:
    """A valid reply frame of exactly ``size`` characters."""
    bare = codec.encode(Reply(id="r", reply_to="c", ok=True, result=""))
    frame = codec.encode(Reply(id="r", reply_to="c", ok=True, result="x" * (size - len(bare))))
    assert len(frame) == size
    return frame


def test_a_frame_at_the_limit_is_accepted() -> None:
    frame = _padded_reply(500)
    assert codec.decode(frame, max_size=500).type == "reply"
    assert codec.decode(frame.encode(), max_size=500).type == "reply"


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_a_frame_one_over_the_limit_is_too_large(as_bytes: bool) -> None:
    text = _padded_reply(501)
    frame: str | bytes = text.encode() if as_bytes else text
    with pytest.raises(FrameTooLarge, match="501 bytes exceeds the limit of 500"):
        codec.decode(frame, max_size=500)


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_the_size_is_checked_before_parsing(as_bytes: bool) -> None:
    # garbage would be a MalformedFrame; too large must win before the parser ever runs
    text = "{" * (codec.AGENT_MAX_FRAME + 1)
    frame: str | bytes = text.encode() if as_bytes else text
    with pytest.raises(FrameTooLarge):
        codec.decode(frame)


def test_the_api_limit_admits_frames_the_agent_limit_refuses() -> None:
    assert codec.API_MAX_FRAME > codec.AGENT_MAX_FRAME
    frame = _padded_reply(codec.AGENT_MAX_FRAME + 1)
    with pytest.raises(FrameTooLarge):
        codec.decode(frame)
    assert codec.decode(frame, codec.API_MAX_FRAME).type == "reply"


def test_the_limit_counts_utf8_bytes_of_a_text_frame() -> None:
    frame = codec.encode(Reply(id="r", reply_to="c", ok=True, result="€" * 100))
    limit = len(frame) + 50
    assert len(frame.encode()) > limit  # under the limit in characters, over it in bytes
    with pytest.raises(FrameTooLarge):
        codec.decode(frame, max_size=limit)
    assert codec.decode(frame, max_size=len(frame.encode())).type == "reply"


# -- refusals ---------------------------------------------------------------------------

MALFORMED: dict[str, str | bytes] = {
    "not json": "hello there",
    "truncated json": '{"v":1,"type":"ping"',
    "json array": '[{"v":1,"type":"ping"}]',
    "json string": '"ping"',
    "json null": "null",
    "empty": "",
    "missing type": '{"v":1,"id":"a"}',
    "extra field": '{"v":1,"id":"a","type":"ping","command":"rm -rf /"}',
    "version 2": '{"v":2,"id":"a","type":"ping"}',
    "version as string": '{"v":"1","id":"a","type":"ping"}',
    "empty id": '{"v":1,"id":"","type":"ping"}',
    "id too long": '{"v":1,"id":"' + "a" * 65 + '","type":"ping"}',
    "wrong field type": '{"v":1,"id":"a","type":"consent_answer","granted":"maybe"}',
    "missing body field": '{"v":1,"id":"a","type":"ack"}',
    "naive datetime": '{"v":1,"id":"a","type":"result","ok":true,'
    '"produced_at":"2024-01-01T00:00:00"}',
    "unknown scope": '{"v":1,"id":"a","type":"session_started","session_id":"s",'
    '"ticket":{"id":"T","title":"t","customer":"c"},"scopes":["shell:exec"],'
    '"expires_at":"2024-01-01T00:00:00Z"}',
    "not utf-8": b'{"v":1,"id":"\xff\xfe","type":"ping"}',
    "nested too deep": "[" * 300 + "]" * 300,
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_refused(frame: str | bytes) -> None:
    with pytest.raises(MalformedFrame) as info:
        codec.decode(frame)
    assert info.value.code == "malformed_frame"
    assert info.value.reason == str(info.value)
    assert info.value.__cause__ is None  # no pydantic internals chained onto the error


def test_a_malformed_frame_names_the_offending_field() -> None:
    with pytest.raises(MalformedFrame, match=r"^ping\.v: "):
        codec.decode(MALFORMED["version 2"])
    with pytest.raises(MalformedFrame, match=r"^ping\.command: "):
        codec.decode(MALFORMED["extra field"])


@pytest.mark.parametrize("tag", ['"shell"', '"Ping"', '""', "5"])
def test_an_unknown_type_is_its_own_error(tag: str) -> None:
    with pytest.raises(UnknownMessageType) as info:
        codec.decode('{"v":1,"id":"a","type":' + tag + "}")
    assert info.value.code == "unknown_type"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FrameTooLarge, "frame_too_large"),
        (MalformedFrame, "malformed_frame"),
        (UnknownMessageType, "unknown_type"),
    ],
)
def test_codec_errors_are_remote_protocol_errors_with_a_code(
    error: type[ProtocolError], code: str
) -> None:
    assert issubclass(error, RemoteProtocolError)
    assert issubclass(error, ProtocolError)
    instance = error("why")
    assert instance.code == code
    assert instance.reason == "why"


HOSTILE = {
    "long unknown type": json.dumps({"v": 1, "id": "a", "type": "x" * 3000}),
    "long extra field name": json.dumps({"v": 1, "id": "a", "type": "ping", "k" * 3000: 1}),
}


@pytest.mark.parametrize("frame", HOSTILE.values(), ids=HOSTILE.keys())
def test_any_decode_error_can_be_reported_to_the_peer(frame: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(frame)
    controller = make_controller()
    controller.data_to_send()
    controller.fail(info.value)  # what the drivers do with every decode error
    [error] = controller.data_to_send()
    assert isinstance(error, Error)
    assert error.code == info.value.code


# -- properties -------------------------------------------------------------------------


@settings(deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_input_raises_only_protocol_errors(frame: str | bytes) -> None:
    try:
        message = codec.decode(frame)
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)
        assert exc.code in {"frame_too_large", "malformed_frame", "unknown_type"}
    else:
        assert message.type in message_types()


_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)


@settings(deadline=None)
@given(
    st.sampled_from([*sorted(message_types()), "nope"]),
    st.dictionaries(
        st.sampled_from(["v", "id", "reply_to", "ok", "granted", "code", "data", "params"]),
        json_values,
    ),
)
def test_envelope_shaped_junk_raises_only_protocol_errors(
    type_: str, fields: dict[str, Any]
) -> None:
    frame = json.dumps({**fields, "type": type_})
    try:
        message = codec.decode(frame)
    except ProtocolError as exc:
        assert isinstance(exc, MalformedFrame | UnknownMessageType)
    else:
        assert message.type == type_


ids = st.text(min_size=1, max_size=64)
aware_datetimes = st.datetimes(
    timezones=st.integers(-23 * 60 + 1, 23 * 60 - 1).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
)


@settings(deadline=None)
@given(
    st.builds(
        Result,
        id=ids,
        reply_to=st.none() | st.text(max_size=64),
        ok=st.booleans(),
        data=st.dictionaries(st.text(max_size=16), json_values, max_size=5),
        error=st.none() | st.text(max_size=200),
        produced_at=aware_datetimes,
    )
)
def test_generated_results_round_trip(result: Result) -> None:
    decoded = codec.decode(codec.encode(result))
    assert decoded == result
    assert isinstance(decoded, Result)
    assert decoded.produced_at.utcoffset() == result.produced_at.utcoffset()


@settings(deadline=None)
@given(
    st.builds(
        Call,
        id=ids,
        reply_to=st.none() | st.text(max_size=64),
        method=st.text(max_size=64),
        params=st.dictionaries(st.text(max_size=16), json_values, max_size=5),
    )
)
def test_generated_calls_round_trip(call: Call) -> None:
    assert codec.decode(codec.encode(call), codec.API_MAX_FRAME) == call


def test_datetimes_keep_their_microseconds_and_offset() -> None:
    moment = datetime(2024, 5, 6, 9, 38, 9, 123456, tzinfo=timezone(timedelta(hours=-5)))
    decoded = codec.decode(codec.encode(Result(ok=True, produced_at=moment)))
    assert isinstance(decoded, Result)
    assert decoded.produced_at == moment
    assert decoded.produced_at.microsecond == 123456
    assert decoded.produced_at.utcoffset() == timedelta(hours=-5)
