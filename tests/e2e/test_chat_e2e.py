"""Chat on the real stack: chat scaled to 3 behind Traefik, Redis as the backplane."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from helpers import receive_close, receive_op
from stack import Stack

CLIENTS = 30
MESSAGES_EACH = 20


async def test_thirty_clients_on_three_replicas_see_all_600_in_one_order(stack: Stack):
    room = "e2e-crowd"
    async with stack.session() as session:
        clients = []
        nodes = set()
        for i in range(CLIENTS):
            ws, hello = await stack.connect(session, "chat", f"crowd{i}")
            nodes.add(hello["node"])
            await ws.send_json({"op": "sub", "id": "s", "ch": room})
            await receive_op(ws, "subscribed")
            clients.append(ws)
        assert len(nodes) == stack.chat_replicas, f"clients reached only {sorted(nodes)}"

        async def publish(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            for n in range(MESSAGES_EACH):
                await ws.send_json({"op": "pub", "id": n, "ch": room, "data": {"text": f"{i}:{n}"}})

        async def receive_all(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[int, str]]:
            got: list[tuple[int, str]] = []
            acks = 0
            while len(got) < CLIENTS * MESSAGES_EACH or acks < MESSAGES_EACH:
                frame = (await ws.receive(timeout=30)).json()
                if frame["op"] == "msg":
                    got.append((frame["offset"], frame["data"]["text"]))
                elif frame["op"] == "ack":
                    acks += 1
                else:
                    assert frame["op"] in ("join", "leave", "members_diff", "heartbeat"), frame
            return got

        receivers = [asyncio.create_task(receive_all(ws)) for ws in clients]
        await asyncio.gather(*(publish(i, ws) for i, ws in enumerate(clients)))
        results = await asyncio.gather(*receivers)
        first = results[0]
        offsets = [offset for offset, _ in first]
        assert offsets == list(range(offsets[0], offsets[0] + CLIENTS * MESSAGES_EACH))
        texts = {text for _, text in first}
        assert texts == {f"{i}:{n}" for i in range(CLIENTS) for n in range(MESSAGES_EACH)}
        for other in results[1:]:
            assert other == first  # same publications, same order, no duplicates
        # each client's own messages are in the order it sent them
        for i in range(CLIENTS):
            own = [int(text.split(":")[1]) for _, text in first if text.startswith(f"{i}:")]
            assert own == list(range(MESSAGES_EACH))
        for ws in clients:
            await ws.close()


def working_set(container: Any) -> int:
    """The container's memory less the page cache (cgroup v1 `cache`, v2 `inactive_file`),
    which the replica's own log lines (written to the json-file log) fill and which the
    kernel reclaims at will."""
    memory = container.stats(stream=False)["memory_stats"]
    stats = memory.get("stats", {})
    cache = stats.get("total_cache", stats.get("cache", stats.get("inactive_file", 0)))
    return int(memory["usage"]) - int(cache)


async def _metric(session: aiohttp.ClientSession, stack: Stack, query: str) -> float | None:
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/query"
    async with session.get(url, params={"query": query}) as response:
        result = (await response.json())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_a_client_that_stops_reading_is_closed_4108_and_others_keep_up(stack: Stack):
    """The slow client connects straight to one replica (the project's own container)
    with a tiny receive buffer and never reads; everyone else goes through Traefik."""
    room = "e2e-slow"
    text = "y" * 1900
    async with stack.session() as session:
        fast, _ = await stack.connect(session, "chat", "fast")
        await fast.send_json({"op": "sub", "id": 1, "ch": room})
        await receive_op(fast, "subscribed")
        victim = stack.containers("chat")[0]
        node = victim.id[:12]
        before = working_set(victim)

        def tiny_socket(addr_info):  # type: ignore[no-untyped-def]
            import socket

            family, kind, proto, _, _ = addr_info
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            return sock

        direct = aiohttp.TCPConnector(socket_factory=tiny_socket)
        async with aiohttp.ClientSession(connector=direct) as raw:
            slow = await raw.ws_connect(
                f"ws://{stack.container_ip(victim)}:8000/chat/ws",
                params={"token": stack.token("slow")},
                # it reads nothing, so it answers no ping either: aiohttp would answer a
                # ping it finds in its buffer when it finally reads, on a socket the server
                # has closed, and report 1006 instead of the close frame behind the ping
                autoping=False,
            )
            assert (await receive_op(slow, "hello"))["node"] == node
            await slow.send_json({"op": "sub", "id": 1, "ch": room})
            await receive_op(slow, "subscribed")
            # from here on the slow client reads nothing

            publishers = []
            for i in range(20):
                ws, _ = await stack.connect(session, "chat", f"flood{i}")
                await ws.send_json({"op": "sub", "id": 1, "ch": room})
                await receive_op(ws, "subscribed")
                publishers.append(ws)
            per_publisher = 150  # 3,000 messages of ~2 KB: ~6 MB through the room

            async def flood(ws: aiohttp.ClientWebSocketResponse, i: int) -> None:
                for n in range(per_publisher):
                    data = {"text": text + f" {i}:{n}"}
                    await ws.send_json({"op": "pub", "id": n, "ch": room, "data": data})
                    await asyncio.sleep(0.06)  # under the 20/s publish limit

            async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
                while True:
                    message = await ws.receive()
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        return

            drains = [asyncio.create_task(drain(ws)) for ws in publishers]
            floods = asyncio.gather(*(flood(ws, i) for i, ws in enumerate(publishers)))
            total = len(publishers) * per_publisher
            offsets = []
            while len(offsets) < total:
                frame = (await fast.receive(timeout=30)).json()
                if frame["op"] == "msg":
                    offsets.append(frame["offset"])
            await floods
            # the fast client received everything, in order, while the slow one stalled
            assert offsets == list(range(offsets[0], offsets[0] + total))

            code = await receive_close(slow, 30)
            assert code == 4108
        after = working_set(victim)
        # ~6 MB went to the slow client's room; the replica kept at most its bound for it
        assert after - before < 4 * 1024 * 1024, (before, after)
        peak = None
        for _ in range(20):
            peak = await _metric(
                session, stack, f'wwws_outbound_peak_bytes{{instance=~".*{victim.name}.*"}}'
            )
            if peak is not None and peak > 0:
                break
            await asyncio.sleep(1)
        assert peak is not None and 0 < peak <= stack.outbound_queue_bytes
        for ws in publishers:
            await ws.close()
        for task in drains:
            await task
        await fast.close()
