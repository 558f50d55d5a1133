"""A closed connection is freed by reference counting as its handler returns, never left
for the cyclic garbage collector: a full collection walks every object it holds, and
under churn thousands of closed connections (with aiohttp's request, handler, writer and
socket objects, ~40 each) would wait for one (docs/benchmarks.md). That holds for a client
that closes properly and for one whose socket just goes away."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import uvloop
from aiohttp import web
from helpers import eventually, receive_op
from replicas import connect, make_settings, token
from stack import free_port

from services.chat.app import create_app
from services.kit import CONTEXT, ServiceContext
from services.kit.connection import Connection
from services.kit.server import serve


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


@contextlib.asynccontextmanager
async def listening_replica() -> AsyncIterator[tuple[int, ServiceContext]]:
    """A chat replica served as in production (aiohttp's test server cancels a handler
    whose client goes, which is not the path a dropped socket takes in a replica)."""
    port, internal = free_port(), free_port()
    settings = make_settings(
        "chat", host="127.0.0.1", port=port, internal_port=internal, drain_seconds=0.0
    )
    app = create_app(settings)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, stop))
    try:
        await eventually(lambda: _listening(port))
        yield port, app[CONTEXT]
    finally:
        stop.set()
        await server
        gc.unfreeze()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_an_aborted_connection_leaves_no_reference_cycle(
    run: Callable[[Coroutine[Any, Any, None]], None],
):
    run(aborted_connections_left_in_cycles())


async def aborted_connections_left_in_cycles() -> None:
    async with listening_replica() as (port, ctx):
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
