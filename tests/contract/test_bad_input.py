"""Bad input gets the documented error frame or close code; other clients keep working."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from helpers import collect_msgs, receive_close, receive_op
from replicas import connect

from services.chat.app import create_app


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"id": 1}', "missing op"),
        ('{"op": "dance", "id": 9}', "unknown op"),
        ('{"op": "sub", "id": 2}', "ch must be"),
        ('{"op": "sub", "id": 3, "ch": "has space"}', "ch must be"),
        ('{"op": "sub", "id": 4, "ch": "lobby", "since": {"epoch": 1}}', "since must be"),
        ('{"op": "pub", "id": 5, "ch": "lobby"}', "data must be"),
        ('{"op": "unsub", "id": 6, "ch": "nowhere"}', "not subscribed"),
    ],
)
async def test_bad_frames_get_error_frames(replicas, text, fragment):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await ws.send_str(text)
    error = await receive_op(ws, "error")
    assert fragment in error["message"]
    assert error["code"] in {"bad_request", "not_found"}
    # the connection is still usable
    await ws.send_json({"op": "sub", "id": "ok", "ch": "lobby"})
    assert (await receive_op(ws, "subscribed"))["id"] == "ok"
    await ws.close()


async def test_error_frame_echoes_id(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await ws.send_json({"op": "nope", "id": "abc"})
    error = await receive_op(ws, "error")
    assert error == {
        "op": "error",
        "id": "abc",
        "code": "bad_request",
        "message": "unknown op 'nope'",
    }


async def _bystander(client):
    ws = await connect(client, "chat", "bob")
    await ws.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(ws, "subscribed")
    return ws


async def _bystander_still_works(client, bystander):
    poster = await connect(client, "chat", "carol")
    await poster.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(poster, "subscribed")
    await poster.send_json({"op": "pub", "id": 2, "ch": "lobby", "data": {"text": "still here"}})
    [msg] = await collect_msgs(bystander, 1)
    assert msg["data"]["text"] == "still here"


async def test_binary_frame_closes_1003(replicas):
    client = await replicas.start(create_app, "chat")
    bystander = await _bystander(client)
    ws = await connect(client, "chat")
    await ws.send_bytes(b"\x00\x01")
    assert await receive_close(ws) == 1003
    await _bystander_still_works(client, bystander)


async def test_oversized_frame_closes_1009(replicas):
    client = await replicas.start(create_app, "chat", max_frame_bytes=1024)
    bystander = await _bystander(client)
    ws = await connect(client, "chat")
    await ws.send_str('{"op":"pub","ch":"lobby","data":{"text":"' + "x" * 4000 + '"}}')
    assert await receive_close(ws) == 1009
    await _bystander_still_works(client, bystander)


async def test_frame_over_the_hard_cap_closes_1009_too(replicas):
    client = await replicas.start(create_app, "chat", max_frame_bytes=1024)
    bystander = await _bystander(client)
    ws = await connect(client, "chat")
    await ws.send_str("x" * 10_000)  # over 4x the limit: refused from the frame header
    assert await receive_close(ws) == 1009
    await _bystander_still_works(client, bystander)


async def test_invalid_utf8_closes_1007(replicas):
    client = await replicas.start(create_app, "chat")
    bystander = await _bystander(client)
    ws = await connect(client, "chat")
    # A text frame whose payload is not UTF-8: aiohttp's public API encodes str, so this
    # goes through its frame writer (the client library's internals, not the kit's).
    await ws._writer.send_frame(b'{"op":"\xff\xfe"}', aiohttp.WSMsgType.TEXT)
    assert await receive_close(ws) == 1007
    await _bystander_still_works(client, bystander)


async def test_flood_gets_rate_limited_then_4129(replicas):
    client = await replicas.start(create_app, "chat")
    bystander = await _bystander(client)
    ws = await connect(client, "chat")
    for _ in range(400):
        await ws.send_str('{"op":"nope"}')
    codes = set()
    while True:
        message = await ws.receive(timeout=5)
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        codes.add(message.json()["code"])
    assert "rate_limited" in codes
    assert ws.close_code == 4129
    await _bystander_still_works(client, bystander)


async def test_requests_with_huge_urls_log_one_short_line_each_at_most(replicas, caplog):
    """Anyone can send these without a token: aiohttp's ERROR traceback per request would
    let them fill the replica's logs."""
    client = await replicas.start(create_app, "chat")
    caplog.set_level(logging.DEBUG)
    for _ in range(15):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"GET /chat/ws?token=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status_line = await reader.readline()
        assert b" 400 " in status_line, status_line
        writer.close()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) <= 10  # rate-limited (the limit is per process: maybe none left)
    for record in records:
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert len(record.getMessage()) < 100
    # the server still serves
    ws = await connect(client, "chat")
    await ws.close()
