"""redis-py's pool (pub/sub, pipelines, WAIT, Sentinel lookups), against a real Redis on
uvloop: a connection lost without a word is "backplane unavailable" to its caller, never
an internal error."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from services.kit.backplane import BackplaneUnavailable, RedisConnection

pytestmark = pytest.mark.redis


def test_a_pool_connection_closed_under_redis_py_on_uvloop_is_unavailable_then_reopened(
    redis_url,
):
    """redis-py's pool (pub/sub, pipelines, WAIT, Sentinel lookups) on uvloop: a command on
    a connection whose socket is already gone raises uvloop's RuntimeError; the caller must
    hear "backplane unavailable" (the client's `unavailable`, not a 1011), and the next
    command gets a new connection."""

    async def lost_then_reopened() -> tuple[BaseException | None, object]:
        redis = RedisConnection(redis_url, pipelined=False)
        try:
            await redis.call(redis.client.set("pool:lost", "before"))
            pooled = redis.client.connection_pool._available_connections[0]
            pooled._writer.transport.abort()  # gone without a word, as a vanished node
            await asyncio.sleep(0.05)
            error: BaseException | None = None
            try:
                await redis.call(redis.client.get("pool:lost"))
            except BaseException as exc:
                error = exc
            return error, await redis.call(redis.client.get("pool:lost"))
        finally:
            await redis.close()

    error, after = uvloop.run(lost_then_reopened())
    assert isinstance(error, BackplaneUnavailable), repr(error)
    assert after == b"before"
