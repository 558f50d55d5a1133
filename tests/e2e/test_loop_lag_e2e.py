"""Blocking work never runs on a replica's event loop.

Under a real workload through Traefik (handshakes, rooms with publishers and
subscribers, scrollback), no sample of any replica's loop lag
(``wwws_event_loop_lag_distribution_seconds``, one sample every 0.5 s) may exceed
``BLOCKED_SECONDS``. This is not a speed test: a blocking call on the loop (a synchronous
DNS lookup, Redis or file call, a sleep) stalls it for whole seconds, while a busy shared
machine delays a sample by milliseconds to tens of them. The samples of the run are read
from each replica's own ``/metrics`` before and after, so only this workload counts.
"""

from __future__ import annotations

import asyncio

import aiohttp
from helpers import INTERLEAVED, receive_json, receive_op
from stack import Stack

BLOCKED_SECONDS = "1.0"  # a bucket bound of the histogram (metrics.py)
METRIC = "wwws_event_loop_lag_distribution_seconds"
SERVICES = ("chat", "ticker", "telephony")


async def lag_samples(session: aiohttp.ClientSession, ip: str) -> tuple[float, float]:
    """(all samples, samples at most BLOCKED_SECONDS) of one replica so far."""
    async with session.get(f"http://{ip}:9000/metrics") as response:
        assert response.status == 200
        text = await response.text()
    total = within = None
    for line in text.splitlines():
        if line.startswith(f"{METRIC}_count"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{METRIC}_bucket{{") and f'le="{BLOCKED_SECONDS}"' in line:
            within = float(line.rsplit(" ", 1)[1])
    assert total is not None and within is not None, f"{METRIC} not exported by {ip}"
    return total, within


async def chat_workload(stack: Stack, session: aiohttp.ClientSession) -> int:
    """Three rooms of 20, every member publishing 10 messages and reading all of them;
    then 60 connect-subscribe-scrollback-close cycles. Returns the messages read."""
    rooms = [f"e2e-lag-{n}" for n in range(3)]
    members: list[tuple[aiohttp.ClientWebSocketResponse, str]] = []
    for n in range(60):
        ws, _ = await stack.connect(session, "chat", f"lag{n}")
        room = rooms[n % 3]
        await ws.send_json({"op": "sub", "id": 1, "ch": room})
        await receive_op(ws, "subscribed")
        members.append((ws, room))
    for i in range(10):
        for ws, room in members:
            await ws.send_json({"op": "pub", "id": 100 + i, "ch": room, "data": {"text": "x"}})

    async def read_all(ws: aiohttp.ClientWebSocketResponse) -> int:
        got = acks = 0
        while got < 200 or acks < 10:  # 20 members x 10 messages in the room, 10 acks
            frame = await receive_json(ws, timeout=30)
            got += frame["op"] == "msg"
            acks += frame["op"] == "ack"
            assert frame["op"] in {"msg", "ack", *INTERLEAVED}, frame
        return got

    read = sum(await asyncio.gather(*(read_all(ws) for ws, _ in members)))
    for ws, _ in members:
        await ws.close()
    for n in range(60):
        ws, _ = await stack.connect(session, "chat", f"cycle{n}")
        await ws.send_json({"op": "sub", "id": 1, "ch": rooms[n % 3]})
        await receive_op(ws, "subscribed")
        await ws.send_json({"op": "history", "id": 2, "ch": rooms[n % 3], "limit": 50})
        await receive_op(ws, "history")
        await ws.close()
    return read


async def test_no_replica_loop_blocks_under_a_chat_workload(stack: Stack):
    async with stack.session() as session:
        replicas = {
            f"{service}/{container.name}": stack.container_ip(container)
            for service in SERVICES
            for container in stack.containers(service)
        }
        before = {name: await lag_samples(session, ip) for name, ip in replicas.items()}
        assert await chat_workload(stack, session) == 60 * 200
        await asyncio.sleep(1.0)  # at least one more sample everywhere
        after = {name: await lag_samples(session, ip) for name, ip in replicas.items()}
    for name in replicas:
        samples = after[name][0] - before[name][0]
        blocked = samples - (after[name][1] - before[name][1])
        assert samples > 0, f"{name}: its loop-lag watch took no sample during the run"
        assert blocked == 0, (
            f"{name}: {blocked:.0f} of {samples:.0f} samples over {BLOCKED_SECONDS} s"
        )
