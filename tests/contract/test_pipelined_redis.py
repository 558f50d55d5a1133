"""The pipelined Redis client of the hot path, against a real Redis: replies reach the
commands they answer, whatever callers are cancelled or connections lost."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time

import pytest
import redis.asyncio as aioredis
import uvloop

from services.kit.backplane import BackplaneUnavailable, RedisConnection
from services.kit.backplane.pipelined_redis import PipelinedRedis

pytestmark = pytest.mark.redis

ECHO = b"return {ARGV[1], #KEYS}"
ECHO_SHA = hashlib.sha1(ECHO).hexdigest()


def client_of(url: str, **options: float) -> PipelinedRedis:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)

    async def address() -> tuple[str, int]:
        return host, int(port)

    return PipelinedRedis(address, **options)  # type: ignore[arg-type]


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(redis_url):
    client = client_of(redis_url)
    await asyncio.gather(*(client.execute("SET", f"pipe:{i}", i) for i in range(500)))
    values = await asyncio.gather(*(client.execute("GET", f"pipe:{i}") for i in range(500)))
    assert values == [b"%d" % i for i in range(500)]
    assert client.connections_opened == 1
    await client.close()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(redis_url):
    client = client_of(redis_url)
    await asyncio.gather(*(client.execute("SET", f"cancel:{i}", i) for i in range(200)))
    calls = [asyncio.ensure_future(client.execute("GET", f"cancel:{i}")) for i in range(200)]
    await asyncio.sleep(0)  # every command is on the wire
    for call in calls[::2]:
        call.cancel()
    kept = await asyncio.gather(*calls[1::2])
    assert kept == [b"%d" % i for i in range(1, 200, 2)]
    assert await client.execute("GET", "cancel:7") == b"7"
    await client.close()


def test_the_client_runs_on_uvloop_the_replicas_default(redis_url):
    async def round_trip() -> list[object]:
        client = client_of(redis_url)
        replies = await asyncio.gather(
            client.execute("SET", "uv", "loop"),
            client.execute("GET", "uv"),
            client.run_script(ECHO_SHA, ECHO, ["k"], ["v"]),
        )
        await client.close()
        return list(replies)

    assert uvloop.run(round_trip()) == [b"OK", b"loop", [b"v", 1]]


async def test_an_error_reply_raises_and_the_connection_carries_on(redis_url):
    client = client_of(redis_url)
    await client.execute("SET", "text", "not a number")
    with pytest.raises(BackplaneUnavailable, match="not an integer"):
        await client.execute("INCR", "text")
    assert await client.execute("GET", "text") == b"not a number"
    assert client.connections_opened == 1
    await client.close()


async def test_a_script_is_sent_again_after_redis_forgets_it(redis_url):
    client = client_of(redis_url)
    assert await client.run_script(ECHO_SHA, ECHO, ["a", "b"], ["x"]) == [b"x", 2]
    await client.execute("SCRIPT", "FLUSH")
    assert await client.run_script(ECHO_SHA, ECHO, ["a"], ["y"]) == [b"y", 1]
    assert await client.execute("SCRIPT", "EXISTS", ECHO_SHA) == [1]
    await client.close()


async def test_a_lost_connection_fails_what_is_in_flight_and_the_next_command_reconnects(
    redis_url,
):
    client = client_of(redis_url)
    own_id = await client.execute("CLIENT", "ID")
    waiting = asyncio.ensure_future(client.execute("BLPOP", "nothing:here", 10))
    await asyncio.sleep(0.2)
    killer = aioredis.Redis.from_url(redis_url)
    await killer.execute_command("CLIENT", "KILL", "ID", own_id)
    await killer.aclose()
    started = time.monotonic()
    with pytest.raises(BackplaneUnavailable, match="lost"):
        await waiting
    assert time.monotonic() - started < 2.0
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("CLIENT", "ID") != own_id
    assert client.connections_opened == 2
    await client.close()


async def test_a_connection_that_answers_nothing_is_closed_after_the_reply_timeout(redis_url):
    client = client_of(redis_url, reply_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackplaneUnavailable):
        await client.execute("BLPOP", "nothing:here", 5)  # Redis holds the reply back
    assert time.monotonic() - started < 2.0
    assert await client.execute("PING") == b"PONG"
    assert client.connections_opened == 2
    await client.close()


async def test_an_unreachable_redis_is_reported_not_waited_for():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = client_of(f"redis://127.0.0.1:{port}/0", connect_timeout=1.0)
    with pytest.raises(BackplaneUnavailable, match="cannot reach Redis"):
        await client.execute("PING")
    await client.close()


@pytest.mark.parametrize("pipelined", [True, False])
async def test_the_connection_runs_commands_and_scripts_on_the_urls_database(redis_url, pipelined):
    """Both paths (pipelined, and redis-py's pool for URLs it does not take) give the
    same replies, on the database the URL names."""
    url = redis_url.rsplit("/", 1)[0] + "/3"
    connection = RedisConnection(url, pipelined=pipelined)
    assert (connection.pipelined is not None) == pipelined
    script = connection.client.register_script(ECHO)
    await connection.execute("SET", "db:three", "here")
    assert await connection.run(script, ["k"], ["z"]) == [b"z", 1]
    assert await connection.execute("GET", "db:three") == b"here"
    other = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    assert await other.get("db:three") is None
    await other.aclose()
    assert await connection.client.get("db:three") == b"here"
    await connection.client.delete("db:three")
    await connection.close()
