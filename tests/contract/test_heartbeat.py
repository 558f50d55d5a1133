"""The replica's heartbeat on a real in-process replica (aiohttp client and server):
pings spread over the interval, a client that answers stays, one that stops answering is
closed with 4110 within 2 intervals, and an interval change is announced before the next
ping. Short intervals (1 s) keep the tests quick; the policy itself is unit-tested."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import aiohttp
from helpers import receive_op
from replicas import connect, token

from services.chat.app import create_app
from services.kit import CONTEXT
from services.kit.connection import Connection
from services.kit.protocol import CloseCode


async def test_a_client_that_answers_pings_stays_and_is_pinged_each_interval(replicas):
    client = await replicas.start(create_app, "chat", heartbeat_seconds=1.0)
    ws = await connect(client, "chat")
    metrics = client.server.app[CONTEXT].metrics
    before = metrics.heartbeat_pings._value.get()
    with contextlib.suppress(TimeoutError):
        # aiohttp's client answers pings while something reads (autoping)
        message = await asyncio.wait_for(ws.receive(), timeout=3.6)
        raise AssertionError(f"nothing but pings expected, got {message}")
    assert not ws.closed
    pings = metrics.heartbeat_pings._value.get() - before
    assert 2 <= pings <= 4, pings
    await ws.close()


async def test_a_client_that_never_pongs_is_closed_with_4110_within_two_intervals(replicas):
    client = await replicas.start(create_app, "chat", heartbeat_seconds=1.0)
    silent = await client.ws_connect("/chat/ws", params={"token": token("mute")}, autoping=False)
    await receive_op(silent, "hello")
    started = time.monotonic()
    pings = 0
    while True:
        message = await asyncio.wait_for(silent.receive(), timeout=5)
        if message.type is aiohttp.WSMsgType.PING:
            pings += 1  # and never answered
            continue
        break
    took = time.monotonic() - started
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == CloseCode.HEARTBEAT_TIMEOUT
    assert pings >= 1
    assert took <= 2 * 1.0 + 0.6, took
    app = client.server.app
    assert app[CONTEXT].metrics.heartbeat_timeouts._value.get() == 1


async def test_any_frame_from_the_client_counts_as_an_answer(replicas):
    """A client that does not pong but talks is there: only silence is closed."""
    client = await replicas.start(create_app, "chat", heartbeat_seconds=1.0)
    talker = await client.ws_connect("/chat/ws", params={"token": token("bob")}, autoping=False)
    await receive_op(talker, "hello")
    for n in range(8):
        await talker.send_json({"op": "members", "id": n, "ch": "room"})
        await asyncio.sleep(0.5)
    assert not talker.closed and talker.close_code is None
    await talker.close()


async def test_the_server_answers_a_client_ping(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await client.ws_connect("/chat/ws", params={"token": token("p")}, autoping=False)
    await receive_op(ws, "hello")
    await ws.ping(b"are you there")
    message = await asyncio.wait_for(ws.receive(), timeout=2)
    assert message.type is aiohttp.WSMsgType.PONG and message.data == b"are you there"
    await ws.close()


async def test_an_interval_change_is_announced_before_the_next_ping(replicas):
    client = await replicas.start(
        create_app,
        "chat",
        heartbeat_seconds=0.0,
        heartbeat_floor_seconds=1.0,
        heartbeat_ceiling_seconds=4.0,
        heartbeat_connections_at_ceiling=10,
    )
    ws = await client.ws_connect("/chat/ws", params={"token": token("x")}, autoping=False)
    hello = await receive_op(ws, "hello")
    assert hello["heartbeat"] == 1.0
    heartbeat = client.server.app[CONTEXT].heartbeat
    for _ in range(20):
        heartbeat.adjust(connections=10, lag=0.0)  # a full replica: the ceiling
    assert heartbeat.interval == 4.0
    seen = []
    while len(seen) < 2:
        message = await asyncio.wait_for(ws.receive(), timeout=6)
        if message.type is aiohttp.WSMsgType.PING:
            seen.append("ping")
            await ws.pong(message.data)
        elif message.type is aiohttp.WSMsgType.TEXT:
            frame = message.json()
            if frame["op"] == "heartbeat":
                seen.append(("heartbeat", frame["interval"]))
    assert seen == [("heartbeat", 4.0), "ping"]
    await ws.close()


async def test_a_closed_connection_is_released_at_once_not_at_its_next_ping(replicas):
    """The wheel holds a connection until its next ping, up to a whole interval away: a
    closed one must leave it then, or every connection closed in the last interval keeps
    its request, reader and buffers alive (thousands under churn, walked by the GC)."""
    client = await replicas.start(create_app, "chat", heartbeat_seconds=60.0)
    ctx = client.server.app[CONTEXT]
    sockets = [await connect(client, "chat", f"leaver{n}") for n in range(5)]
    held = list(ctx.replica.connections)
    for ws in sockets:
        await ws.close()
    await asyncio.wait_for(asyncio.gather(*(conn.ended.wait() for conn in held)), timeout=5)
    del held
    await asyncio.sleep(0.1)  # the handlers return after their cleanup
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) is Connection and o.user.startswith("leaver")]
    assert alive == [], f"{len(alive)} closed connections still referenced"
