"""The adaptive heartbeat and presence on the real stack, through Traefik: the interval a
chat replica announces grows with the connections it holds and falls back when they
leave; a client that stops answering pings is offline for its watchers within 2
intervals; a killed replica's users are offline within the liveness bound."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
from helpers import eventually, receive_op
from stack import Stack
from stack_fixtures import compose_up

IDLE = 2400  # over 3 chat replicas: ~800 each, 40 % of the test stack's ceiling level


async def chat_intervals(stack: Stack) -> dict[str, float]:
    """instance -> wwws_heartbeat_interval_seconds, as Prometheus has it now"""
    query = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/query"
    params = {"query": 'wwws_heartbeat_interval_seconds{job="chat"}'}
    async with aiohttp.ClientSession() as session, session.get(query, params=params) as response:
        result = (await response.json())["data"]["result"]
    return {series["metric"]["instance"]: float(series["value"][1]) for series in result}


async def wait_for_intervals(
    stack: Stack, check, what: str, timeout: float = 90
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = await chat_intervals(stack)
        if seen and check(seen):
            return seen
        await asyncio.sleep(2)
    raise AssertionError(f"{what}: not within {timeout}s; last seen {seen}")


async def test_the_interval_grows_with_idle_connections_and_falls_back(stack: Stack):
    before = await wait_for_intervals(stack, lambda s: len(s) == 3, "three chat replicas")
    assert all(interval <= 15 for interval in before.values()), before
    announced: dict[str, list[float]] = {}

    async def hold(ws: aiohttp.ClientWebSocketResponse, node: str) -> None:
        async for message in ws:  # aiohttp answers the pings while this reads
            if message.type is aiohttp.WSMsgType.TEXT:
                frame = message.json()
                if frame["op"] == "heartbeat":
                    announced.setdefault(node, []).append(frame["interval"])

    started = time.monotonic()
    async with stack.session() as session:
        sockets = []
        readers = []
        for i in range(IDLE):
            ws, hello = await stack.connect(session, "chat", f"idle{i}")
            sockets.append(ws)
            readers.append(asyncio.create_task(hold(ws, hello["node"])))
        print(f"{IDLE} idle connections open in {time.monotonic() - started:.0f}s")
        try:
            grown = await wait_for_intervals(
                stack, lambda s: min(s.values()) >= 25, "every replica's interval >= 25 s"
            )
            print(f"intervals: {before} with no load -> {grown} with {IDLE} idle connections")
            # the connections heard it over the socket (each before its next ping)
            await eventually(
                lambda: len(announced) == 3 and all(max(v) >= 25 for v in announced.values()),
                timeout=max(grown.values()) + 5,
                what="every replica's connections told of the longer interval",
            )
            assert all(not ws.closed for ws in sockets), "an answering client was closed"
        finally:
            for ws in sockets:
                await ws.close()
            for reader in readers:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    fallen = await wait_for_intervals(
        stack,
        lambda s: max(s.values()) <= max(grown.values()) / 2,
        "the intervals back toward the floor",
    )
    print(f"after they left: {fallen}")


async def test_a_client_that_stops_answering_pings_is_offline_for_its_watchers(stack: Stack):
    async with stack.session() as session:
        watcher, _ = await stack.connect(session, "telephony", "hb-watcher")
        mute = await session.ws_connect(
            f"{stack.wss}/telephony/ws",
            params={"token": stack.token("hb-mute")},
            autoping=False,  # and it reads nothing after hello: no pong ever
        )
        await receive_op(mute, "hello")  # it is online (the hello follows the presence join)
        await watcher.send_json({"op": "watch", "id": 1, "users": ["hb-mute"]})
        state = await receive_op(watcher, "presence_state")
        assert state["users"] == {"hb-mute": "online"}
        started = time.monotonic()
        offline = await receive_op(watcher, "presence", timeout=60)
        took = time.monotonic() - started
        assert offline["status"] == "offline"
        # the interval is at most the floor here (no load): 2 x 10 s + half a second slot,
        # plus Traefik and a busy machine
        assert took <= 2 * 10 + 0.5 + 5, took
        print(f"a client that stopped answering was offline for its watcher after {took:.1f}s")
        await mute.close()
        await watcher.close()


async def test_kill_9_of_a_telephony_replica_its_users_are_offline_within_the_bound(
    stack: Stack,
):
    """Not the presence TTL: the surviving replica sees the dead one's liveness mark expire
    (6 s) and removes its users (README: within about 8 s; 15 s allowed here for Traefik
    and a busy 2-core machine)."""
    async with stack.session() as session:
        watcher, hello = await stack.connect(session, "telephony", "kill-watcher")
        survivor = hello["node"]
        victims = []
        for i in range(40):  # users until some land on the other replica
            ws, their_hello = await stack.connect(session, "telephony", f"kill-user{i}")
            if their_hello["node"] != survivor:
                victims.append((f"kill-user{i}", ws, their_hello["node"]))
                if len(victims) == 3:
                    break
            else:
                await ws.close()
        assert victims, "every connection landed on the watcher's replica"
        users = [user for user, _, _ in victims]
        await watcher.send_json({"op": "watch", "id": 1, "users": users})
        state = await receive_op(watcher, "presence_state")
        assert set(state["users"].values()) == {"online"}
        try:
            stack.container_for(victims[0][2]).kill()  # SIGKILL: no close, no leave
            killed = time.monotonic()
            offline = set()
            while offline != set(users):
                event = await receive_op(watcher, "presence", timeout=30)
                assert event["status"] == "offline"
                offline.add(event["user"])
            took = time.monotonic() - killed
            print(f"kill -9 of a telephony replica: its users offline after {took:.1f}s")
            assert took <= 15, took
        finally:
            await watcher.close()
            await compose_up(stack)  # Docker does not restart a replica it was told to kill
