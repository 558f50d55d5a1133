"""A full Redis (maxmemory reached, noeviction) refuses writes: the client is told
`unavailable`, its connection and everyone else's stay, and nothing stored is evicted."""

from __future__ import annotations

import pytest
import redis
from backplanes import BackplaneFactory
from helpers import receive_op
from replicas import Replicas, connect

from services.chat.app import create_app

pytestmark = pytest.mark.redis


async def test_a_full_redis_refuses_publishing_with_unavailable_and_keeps_history(
    redis_url: str, aiohttp_client: object
):
    factory = BackplaneFactory(redis_url)
    replicas = Replicas(factory, aiohttp_client)
    server = await replicas.start(create_app, "chat")
    ws = await connect(server, "chat", "ann")
    await ws.send_json({"op": "sub", "id": 1, "ch": "full"})
    await receive_op(ws, "subscribed")
    await ws.send_json({"op": "pub", "id": 2, "ch": "full", "data": {"text": "before"}})
    stored = (await receive_op(ws, "ack"))["offset"]
    direct = redis.Redis.from_url(redis_url)
    direct.config_set("maxmemory-policy", "noeviction")
    direct.config_set("maxmemory", int(direct.info("memory")["used_memory"]) // 2)
    try:
        await ws.send_json({"op": "pub", "id": 3, "ch": "full", "data": {"text": "too much"}})
        refused = await receive_op(ws, "error")
        assert (refused["id"], refused["code"]) == (3, "unavailable")
    finally:
        direct.config_set("maxmemory", 0)
    await ws.send_json({"op": "pub", "id": 4, "ch": "full", "data": {"text": "after"}})
    assert (await receive_op(ws, "ack"))["offset"] == stored + 1  # nothing lost, no gap
    await ws.send_json({"op": "history", "id": 5, "ch": "full"})
    page = await receive_op(ws, "history")
    assert [p["data"]["text"] for p in page["publications"]] == ["before", "after"]
    await ws.close()
