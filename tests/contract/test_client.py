"""The Python client reconnects by close code and resumes without loss or duplicates."""

from __future__ import annotations

import asyncio

from aiohttp import web
from helpers import eventually
from replicas import token

from services.chat.app import create_app
from services.kit import CONTEXT
from services.kit.client import Client, ClientError
from services.kit.outbound import close_frame, text_frame
from services.kit.protocol import encode


def ws_url(client) -> str:
    return str(client.make_url("/chat/ws")).replace("http://", "ws://")


async def test_client_resumes_after_its_connection_drops(replicas):
    server = await replicas.start(create_app, "chat")
    url = ws_url(server)
    async with Client(url, token("reader"), backoff_base=0.01) as reader:
        await reader.subscribe("lobby")
        async with Client(url, token("writer")) as writer:
            await writer.subscribe("lobby")
            acked = [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5)]
            for conn in list(server.app[CONTEXT].replica.connections):
                if conn.user == "reader":
                    conn.close(1011, "simulated crash")
            acked += [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5, 10)]
            got: list[int] = []
            messages = reader.messages()
            while len(got) < 10:
                _channel, offset, _data = await asyncio.wait_for(messages.__anext__(), 10)
                got.append(offset)
            assert got == acked == list(range(1, 11))
            assert reader.reconnects >= 1 and reader.gaps == []


async def test_client_stops_on_4xxx_and_reports_errors(replicas):
    server = await replicas.start(create_app, "chat")
    async with Client(ws_url(server), token("alice")) as client:
        try:
            await client.publish("lobby", {"text": "not subscribed"})
        except ClientError as error:
            assert error.code == "forbidden"
        else:
            raise AssertionError("expected forbidden")
        for conn in list(server.app[CONTEXT].replica.connections):
            conn.close(4003, "go away")
        await eventually(lambda: client.stopped_with is not None, what="the client stops")
        assert client.stopped_with == 4003


async def test_client_trusts_the_close_frame_when_the_socket_is_gone_first(aiohttp_client):
    """A server (or proxy) that drops TCP right behind its 1001 close frame: aiohttp's
    ``ws.close_code`` then reads 1006, but the frame said "reconnect at once"."""
    handshakes = 0

    async def drop_after_close_frame(request: web.Request) -> web.StreamResponse:
        nonlocal handshakes
        handshakes += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        hello = text_frame(encode({"op": "hello", "node": "n", "user": "u", "heartbeat": 25}))
        if handshakes == 1:
            request.transport.write(hello + close_frame(1001, b"server going away"))
            request.transport.close()
            return ws
        request.transport.write(hello)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", drop_after_close_frame)
    server = await aiohttp_client(app)
    url = str(server.make_url("/ws")).replace("http://", "ws://")
    # With a backoff of up to 1000 s, a second handshake within the test is "at once".
    async with Client(url, token("alice"), backoff_base=1000.0, backoff_cap=1000.0):
        await eventually(lambda: handshakes == 2, timeout=5.0, what="an immediate reconnect")
