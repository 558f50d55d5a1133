"""A closed connection is freed by reference counting as its handler returns, never left
for the cyclic garbage collector: a full collection walks every object it holds, and
under churn thousands of closed connections (with aiohttp's request, handler, writer and
socket objects, ~40 each) would wait for one (docs/benchmarks.md). That holds for a client
that closes properly and for one whose socket just goes away."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from aiohttp import web
from helpers import receive_op
from replicas import connect, served, token

from services.chat.app import create_app
from services.kit import CONTEXT
from services.kit.connection import Connection


async def test_a_closed_connection_leaves_no_reference_cycle(replicas):
    client = await replicas.start(create_app, "chat")
    ctx = client.server.app[CONTEXT]
    gc.collect()
    gc.disable()  # what a cycle holds now stays: the test sees it
    try:
        sockets = []
        for n in range(5):
            ws = await connect(client, "chat", f"freed{n}")
            await ws.send_json({"op": "sub", "id": 1, "ch": "release-room"})
            await receive_op(ws, "subscribed")
            sockets.append(ws)
        ended = [conn.ended.wait() for conn in ctx.replica.connections]
        for ws in sockets:
            await ws.close()
        await asyncio.wait_for(asyncio.gather(*ended), timeout=5)
        del ended
        await asyncio.sleep(0.1)  # the handlers return after their cleanup
        alive = [o for o in gc.get_objects() if type(o) is Connection and o.user[:5] == "freed"]
        assert alive == [], f"{len(alive)} closed connections kept by a reference cycle"
    finally:
        gc.enable()


async def upgraded_raw(host: str, port: int, user: str) -> asyncio.StreamWriter:
    """A bare client socket, upgraded and past its hello."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /chat/ws?token={token(user)} HTTP/1.1\r\nHost: {host}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    assert b"hello" in await reader.read(4096)
    return writer


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_an_aborted_connection_leaves_no_reference_cycle(
    run: Callable[[Coroutine[Any, Any, None]], None],
):
    run(aborted_connections_left_in_cycles())


async def aborted_connections_left_in_cycles() -> None:
    async with served(create_app, "chat") as (port, ctx):
        gc.collect()
        gc.disable()
        try:
            writers = [await upgraded_raw("127.0.0.1", port, f"dropped{n}") for n in range(5)]
            ended = [conn.ended.wait() for conn in ctx.replica.connections]
            for writer in writers:
                # gone without a close frame: a killed browser tab, a phone out of coverage
                writer.transport.abort()
            await asyncio.wait_for(asyncio.gather(*ended), timeout=5)
            del ended
            await asyncio.sleep(0.1)
            # the session's own objects are freed; aiohttp's response held itself
            alive = [o for o in gc.get_objects() if type(o) is web.WebSocketResponse]
            assert alive == [], f"{len(alive)} aborted sockets kept by a reference cycle"
        finally:
            gc.enable()
