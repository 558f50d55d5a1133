"""Dropping aiohttp's HTTP parser and request queue at the upgrade (http_state_release.py).

These run on the real aiohttp server the kit runs on: if an aiohttp upgrade renames what
the release touches, or starts using it after an upgrade, one of them fails.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from services.kit.http_state_release import NO_REQUESTS, release_http_state


class Seen:
    def __init__(self) -> None:
        self.released: list[bool] = []
        self.protocols: list[Any] = []
        self.ended = asyncio.Event()


def echo_app(seen: Seen) -> web.Application:
    async def ws_echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False, autoclose=False)
        await ws.prepare(request)
        seen.protocols.append(request.protocol)
        seen.released.append(release_http_state(request))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    if message.data == "close please":
                        await ws.close(code=4000)
                        break
                    await ws.send_str(message.data.upper())
                elif message.type == WSMsgType.CLOSE:
                    await ws.close()
                    break
        finally:
            seen.ended.set()
        return ws

    async def plain(request: web.Request) -> web.Response:
        seen.released.append(release_http_state(request))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/plain", plain)
    return app


@pytest.fixture
async def served(caplog: pytest.LogCaptureFixture) -> Any:
    seen = Seen()
    client = TestClient(TestServer(echo_app(seen)))
    await client.start_server()
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    try:
        yield client, seen
    finally:
        await client.close()
    # aiohttp logs what goes wrong in a connection's handling ("Error handling request",
    # "Unhandled exception") instead of raising it to anyone
    errors = [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]


async def test_an_upgraded_connection_drops_the_parser_and_the_queue_and_still_works(
    served: Any,
) -> None:
    client, seen = served
    ws = await client.ws_connect("/ws")
    assert seen.released == [True]
    protocol = seen.protocols[0]
    assert protocol._parser is None
    assert protocol._messages == NO_REQUESTS
    for text in ("one", "two", "x" * 70_000):  # the last needs a 64-bit length header
        await ws.send_str(text)
        reply = await ws.receive(timeout=5)
        assert reply.type == WSMsgType.TEXT and reply.data == text.upper()
    await ws.close()
    assert ws.close_code == 1000
    await asyncio.wait_for(seen.ended.wait(), 5)


async def test_a_server_close_and_a_dropped_socket_end_cleanly_after_the_release(
    served: Any,
) -> None:
    client, seen = served
    ws = await client.ws_connect("/ws")
    await ws.send_str("close please")
    closing = await ws.receive(timeout=5)
    assert closing.type == WSMsgType.CLOSE and closing.data == 4000
    await asyncio.wait_for(seen.ended.wait(), 5)

    seen.ended.clear()
    dropped = await client.ws_connect("/ws")
    await dropped.send_str("hi")
    assert (await dropped.receive(timeout=5)).data == "HI"
    transport = dropped._response.connection.transport  # no close frame: the TCP goes
    transport.abort()
    await asyncio.wait_for(seen.ended.wait(), 5)
    assert seen.released == [True, True]
    # the server lost both connections the way aiohttp always does
    await asyncio.sleep(0.1)
    assert all(p.transport is None for p in seen.protocols)


async def test_a_plain_request_keeps_its_parser_for_the_next_request_on_the_connection(
    served: Any,
) -> None:
    client, seen = served
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, three requests
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            async with session.get(client.make_url("/plain")) as response:
                assert response.status == 200 and await response.text() == "ok"
    assert seen.released == [False, False, False]
