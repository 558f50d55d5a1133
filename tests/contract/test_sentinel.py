"""Redis without a single point of failure: the services reach Redis through Sentinel
(``redis+sentinel://``), an ``ack`` means a replica holds the message (``WAIT``), and
kill -9 of the primary while clients publish loses no acknowledged message. Real Redis
and real Sentinels (containers of the stack's Redis image); the chat service in-process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from helpers import SECRET, eventually
from replicas import make_settings
from sentinel_cluster import SentinelCluster, running_sentinel_cluster

from clients.wwws import Client, ClientError, NotAcknowledged
from services.chat.app import create_app as create_chat
from services.kit.auth import mint_token
from services.kit.backplane import RedisBackplane

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    with running_sentinel_cluster() as started:
        yield started


def ws_url(server) -> str:
    return str(server.make_url("/chat/ws")).replace("http://", "ws://")


async def test_no_ack_without_a_replica_holding_the_message(aiohttp_client, cluster):
    server = await aiohttp_client(
        create_chat(
            make_settings("chat"), RedisBackplane(cluster.url(ack_replicas=1, ack_timeout_ms=300))
        )
    )
    async with (
        Client(ws_url(server), mint_token("alice", SECRET)) as alice,
        Client(ws_url(server), mint_token("bob", SECRET)) as bob,
    ):
        await alice.subscribe("durable")
        await bob.subscribe("durable")
        first = await alice.publish("durable", {"text": "replicated"})
        # this test runs before the failover test: the replicas are the first ones
        for replica in cluster.replicas:
            await asyncio.to_thread(replica.pause)  # no replica acknowledges any more
        try:
            with pytest.raises(ClientError) as refused:
                await alice.publish_again("durable", {"text": "held back"}, "idem-held")
            assert refused.value.code == "unavailable"
            # stored on the primary but held by no replica: no reader gets it (a failover
            # now would lose it and give its offset to another publication)
            async with Client(ws_url(server), mint_token("carol", SECRET)) as carol:
                joined = await carol.subscribe("durable")
                assert joined["offset"] == first
                texts = [item["data"]["text"] for item in joined["publications"]]
                assert texts == ["replicated"]
        finally:
            for replica in cluster.replicas:
                await asyncio.to_thread(replica.unpause)
        # the retry with the same key is answered once the replica has it, and delivered live
        second = await alice.publish_again("durable", {"text": "held back"}, "idem-held")
        assert second == first + 1
        got = [await bob.next_message(within=5) for _ in range(2)]
        assert [(offset, data["text"]) for _, offset, data in got] == [
            (first, "replicated"),
            (second, "held back"),
        ]


async def test_killing_the_primary_loses_no_acknowledged_message(aiohttp_client, cluster):
    servers = [
        await aiohttp_client(
            create_chat(make_settings("chat", node_id=f"n{i}"), RedisBackplane(cluster.url()))
        )
        for i in range(2)
    ]
    room = "failover"
    reader = Client(ws_url(servers[0]), mint_token("reader", SECRET), backoff_base=0.05)
    writers = [
        Client(ws_url(servers[i % 2]), mint_token(f"w{i}", SECRET), backoff_base=0.05)
        for i in range(4)
    ]
    acked: dict[int, str] = {}
    ack_times: list[tuple[float, float]] = []  # (publish sent, ack received)
    stop = asyncio.Event()

    async def write(i: int, client: Client) -> None:
        n = 0
        while not stop.is_set():
            text = f"{i}:{n}"
            n += 1
            began = time.monotonic()
            try:
                acked[await client.publish(room, {"text": text}, retry_for=0)] = text
                ack_times.append((began, time.monotonic()))
            except (NotAcknowledged, ClientError, ConnectionError):
                await asyncio.sleep(0.1)  # not acknowledged: not promised
            await asyncio.sleep(0.05)

    for client in (reader, *writers):
        await client.start()
        await client.subscribe(room)
    tasks = [asyncio.create_task(write(i, c)) for i, c in enumerate(writers)]
    try:
        await asyncio.sleep(1.5)
        old_primary = cluster.current_primary()
        await asyncio.to_thread(cluster.primary.kill)  # SIGKILL: no shutdown, no save
        killed = time.monotonic()
        await eventually(
            lambda: cluster.current_primary() != old_primary, timeout=30, what="a failover"
        )
        # the first publication sent after the kill that was acknowledged
        await eventually(
            lambda: any(sent > killed for sent, _ in ack_times),
            timeout=30,
            what="an ack after the kill",
        )
        recovered_after = min(acked_at for sent, acked_at in ack_times if sent > killed) - killed
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    print(f"publishing worked again {recovered_after:.1f} s after kill -9 of the primary")
    top = max(acked)
    got: list[tuple[int, str]] = []
    while not got or got[-1][0] < top:
        _, offset, data = await reader.next_message(within=15)
        got.append((offset, data["text"]))
    offsets = [offset for offset, _ in got]
    assert offsets == sorted(set(offsets)), "out of order or twice"
    texts = dict(got)
    lost = [offset for offset in acked if texts.get(offset) != acked[offset]]
    assert lost == [], f"{len(lost)} acknowledged messages lost or changed: {lost[:10]}"
    assert len(acked) > 40 and reader.gaps == []
    for client in (reader, *writers):
        await client.close()
