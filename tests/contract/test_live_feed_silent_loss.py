"""A Redis that vanishes without a word (its machine gone: no FIN, no RST; here its
container is cut off its network) must neither freeze the replica nor end its live feed.

After the keepalive gives the pub/sub connection up, redis-py answers every read at once
with "no message" without yielding to the event loop (100,000 reads in 2 s, measured on
uvloop), and its next health check raises a RuntimeError (a write on uvloop's closed
transport): the replica froze until then, and the live reader died of it, leaving every
channel of the replica quiet for good (a client stuck at offset 42 of 282 in the Swarm
node-kill test)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import docker
import pytest
import uvloop
from helpers import eventually
from redis_server import redis_container

from services.kit.backplane import Publication, RedisBackplane
from services.kit.hub import ChannelHub, SubscribeResult

# the keepalive gives the connection up after ~5-7 s, redis-py's health check is at 10 s
CUT_OFF_SECONDS = 13.0


class Recorder:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def deliver(self, channel: str, publication: Publication, frame: bytes) -> None:
        self.data.append(publication.data)

    def resubscribed(self, channel: str, result: SubscribeResult) -> None:
        pass


async def _vanish_and_return(container: Any, network: Any, url: str) -> None:
    loop = asyncio.get_running_loop()
    backplane = RedisBackplane(url)
    publisher: RedisBackplane | None = None
    try:
        hub = ChannelHub(backplane, "vanish")
        recorder = Recorder()
        await hub.subscribe(recorder, "room", None, 10, lambda _: None)
        await hub.publish("room", b'{"n":1}')
        await eventually(lambda: recorder.data == [b'{"n":1}'], what="the first publication")

        stalls: list[float] = []

        async def watch() -> None:
            while True:
                started = loop.time()
                await asyncio.sleep(0.1)
                stalls.append(loop.time() - started - 0.1)

        watcher = asyncio.create_task(watch())
        await asyncio.to_thread(network.disconnect, container, force=True)
        await asyncio.sleep(CUT_OFF_SECONDS)
        watcher.cancel()
        assert max(stalls) < 1.0, f"the event loop stalled for {max(stalls):.1f}s"

        await asyncio.to_thread(network.connect, container)
        await asyncio.to_thread(container.reload)
        address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        assert f"//{address}:" in url, f"the container came back at another address: {address}"
        publisher = RedisBackplane(url)
        await ChannelHub(publisher, "vanish").publish("room", b'{"n":2}')
        # the reader opened the pub/sub connection again and resubscribed
        await eventually(
            lambda: b'{"n":2}' in recorder.data, timeout=20, what="a publication after the return"
        )
    finally:
        await backplane.close()
        if publisher is not None:
            await publisher.close()


@pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
def test_a_silently_vanished_redis_neither_freezes_the_replica_nor_ends_its_live_feed(
    run: Callable[[Coroutine[Any, Any, None]], None],
):
    if os.environ.get("WWWS_TEST_REDIS_URL"):
        pytest.skip("cuts a Redis container of its own off its network (Docker)")
    client = docker.from_env()
    network = client.networks.create(
        f"wwws-test-vanish-{secrets.token_hex(3)}", labels={"wwws.test": "network"}
    )
    try:
        with redis_container(network.name) as (container, url):
            run(_vanish_and_return(container, network, url))
    finally:
        network.remove()
        client.close()
