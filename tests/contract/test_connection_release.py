"""A closed connection is freed by reference counting as its handler returns, never left
for the cyclic garbage collector: a full collection walks every object it holds, and
under churn thousands of closed connections (with aiohttp's request, handler, writer and
socket objects, ~40 each) would wait for one (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import gc

from helpers import receive_op
from replicas import connect

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
