from __future__ import annotations

import orjson
import pytest

from services.kit.backplane import Publication, ReadResult
from services.kit.protocol import (
    MAX_JSON_DEPTH,
    ErrorCode,
    JsonTooDeep,
    ProtocolError,
    error_frame,
    load_json,
    msg_frame,
    optional_since,
    parse_client_frame,
    require_channel,
    subscribed_frame,
)


def test_parse_keeps_op_id_and_body():
    frame = parse_client_frame('{"op":"sub","id":1,"ch":"lobby"}')
    assert (frame.op, frame.id, frame.body["ch"]) == ("sub", 1, "lobby")


@pytest.mark.parametrize(
    "text", ["", "{", "null", "[]", '"x"', '{"op":""}', '{"op":5}', '{"op":"x","id":true}']
)
def test_parse_rejects_with_bad_request(text):
    with pytest.raises(ProtocolError) as error:
        parse_client_frame(text)
    assert error.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("name", ["lobby", "user:alice", "a.b-c_d@e", "x" * 64])
def test_valid_channels(name):
    assert require_channel(parse_client_frame(orjson.dumps({"op": "s", "ch": name}).decode()))


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "é", "a/b", 5, None])
def test_invalid_channels(name):
    with pytest.raises(ProtocolError):
        require_channel(parse_client_frame(orjson.dumps({"op": "s", "ch": name}).decode()))


@pytest.mark.parametrize(
    "since",
    [{"epoch": "e"}, {"offset": 1}, {"epoch": "e", "offset": -1}, {"epoch": "e", "offset": True}],
)
def test_invalid_since(since):
    frame = parse_client_frame(orjson.dumps({"op": "sub", "since": since}).decode())
    with pytest.raises(ProtocolError):
        optional_since(frame)


def test_msg_frame_is_valid_json_from_stored_bytes():
    frame = msg_frame('we"ird', 42, b'{"text":"hi \\u00e9"}')
    assert orjson.loads(frame) == {
        "op": "msg",
        "ch": 'we"ird',
        "offset": 42,
        "data": {"text": "hi é"},
    }


def test_subscribed_frame_embeds_msg_frames():
    pubs = [Publication(3, b'{"a":1}'), Publication(4, b'{"a":2}')]
    frame = orjson.loads(subscribed_frame(1, "c", "ep", 4, True, pubs))
    assert frame["publications"][1] == {"op": "msg", "ch": "c", "offset": 4, "data": {"a": 2}}
    assert frame["id"] == 1 and frame["recovered"] is True
    assert "id" not in orjson.loads(subscribed_frame(None, "c", "ep", 0, False, []))


def test_error_frame_shape():
    assert orjson.loads(error_frame(ErrorCode.TOO_LARGE, "big", "x")) == {
        "op": "error",
        "code": "too_large",
        "message": "big",
        "id": "x",
    }


@pytest.mark.parametrize(
    ("top", "first", "after", "covered"),
    [
        (0, 1, 0, True),
        (5, 1, 5, True),
        (5, 1, 0, True),
        (10, 8, 7, True),
        (10, 8, 6, False),
        (5, 1, 6, False),
        (10, 11, 9, False),
        (10, 11, 10, True),
    ],
)
def test_read_result_covers(top, first, after, covered):
    assert ReadResult("e", top, first, []).covers(after) is covered


def nested(depth: int, kind: str = "list") -> str:
    """JSON of ``depth`` nested arrays (or objects), the outermost counting as one."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("kind", ["list", "object"])
def test_load_json_takes_the_depth_limit_and_refuses_one_more(kind):
    assert load_json(nested(MAX_JSON_DEPTH, kind)) is not None
    assert load_json(nested(MAX_JSON_DEPTH, kind).encode()) is not None
    with pytest.raises(JsonTooDeep):
        load_json(nested(MAX_JSON_DEPTH + 1, kind))


def test_deep_data_that_orjson_parses_but_cannot_serialise_is_a_bad_request():
    data = nested(300)
    orjson.loads(data)  # orjson parses it ...
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(orjson.loads(data))  # ... but could not store or relay it
    with pytest.raises(ProtocolError) as error:
        parse_client_frame('{"op":"signal","id":4,"data":' + data + "}")
    assert error.value.code is ErrorCode.BAD_REQUEST
    assert "nested deeper than 32" in error.value.message


def test_many_shallow_brackets_are_not_too_deep():
    wide = "[" + ",".join(["[]"] * 1000) + "]"
    assert len(load_json(wide)) == 1000
