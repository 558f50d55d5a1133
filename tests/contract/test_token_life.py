"""A connection lives by its token: refreshed over the socket, closed with 4010 at exp
when it is not, closed with 4011 on every replica and service when the user is revoked,
and one user holds at most WWWS_MAX_CONNECTIONS_PER_USER sockets per replica."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import pytest
from helpers import SECRET, eventually, receive_close, receive_op
from partition import Partition
from replicas import connect, make_settings, token

from clients.wwws import Client, Stopped
from services.chat.app import create_app as create_chat
from services.kit import CONTEXT, mint_token, revoke_user
from services.kit.backplane import RedisBackplane
from services.kit.revocation import ANSWERED_WITHIN, HEARING_WAIT
from services.ticker.app import create_app as create_ticker


def short_token(user: str, seconds: float, issued_ago: float = 0.0) -> str:
    now = time.time()
    claims = {"sub": user, "iat": int(now - issued_ago), "exp": int(now + seconds)}
    return jwt.encode(claims, SECRET, "HS256")


async def open_ws(client, service: str, user_token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect(f"/{service}/ws", params={"token": user_token})
    await receive_op(ws, "hello")
    return ws


async def test_refresh_notice_then_4010_at_exp_when_not_refreshed(replicas):
    client = await replicas.start(create_chat, "chat", token_refresh_seconds=60)
    ws = await open_ws(client, "chat", short_token("alice", 2))
    notice = await receive_op(ws, "refresh")  # inside the window at once: 2 s < 60 s
    assert 0 < notice["in"] <= 2 and notice["exp"] > time.time()
    began = time.monotonic()
    assert await receive_close(ws, timeout=5) == 4010
    assert time.monotonic() - began < 4
    replica = client.app[CONTEXT].replica
    await eventually(lambda: not replica.connections, what="the session ended")
    assert not replica.per_user


async def test_a_refreshed_connection_outlives_its_first_token(replicas):
    client = await replicas.start(create_chat, "chat", token_refresh_seconds=1)
    ws = await open_ws(client, "chat", short_token("alice", 2))
    await ws.send_json({"op": "sub", "ch": "lobby", "id": 1})
    await receive_op(ws, "subscribed")
    await receive_op(ws, "refresh", timeout=3)
    await ws.send_json({"op": "refresh", "id": 2, "token": short_token("alice", 10)})
    refreshed = await receive_op(ws, "refreshed")
    assert refreshed["id"] == 2 and refreshed["exp"] > time.time() + 2
    await asyncio.sleep(2.5)  # past the first token's exp
    await ws.send_json({"op": "pub", "ch": "lobby", "id": 3, "data": {"text": "still here"}})
    assert (await receive_op(ws, "ack"))["id"] == 3
    await ws.close()


@pytest.mark.parametrize(
    ("new_token", "code"),
    [
        (lambda: short_token("mallory", 60), "forbidden"),  # someone else's token
        (lambda: mint_token("alice", "w" * 40), "unauthorized"),  # wrongly signed
        (lambda: short_token("alice", -5), "unauthorized"),  # already expired
        (lambda: jwt.encode({"sub": "alice", "exp": 2**40}, None, "none"), "unauthorized"),
    ],
)
async def test_a_bad_refresh_is_an_error_and_the_old_token_still_rules(replicas, new_token, code):
    client = await replicas.start(create_chat, "chat", token_refresh_seconds=60)
    ws = await open_ws(client, "chat", short_token("alice", 2))
    await receive_op(ws, "refresh")
    await ws.send_json({"op": "refresh", "id": 9, "token": new_token()})
    error = await receive_op(ws, "error")
    assert error["id"] == 9 and error["code"] == code
    assert await receive_close(ws, timeout=5) == 4010


async def test_revoking_closes_the_user_everywhere_and_refuses_old_tokens(replicas):
    chat_a = await replicas.start(create_chat, "chat")
    chat_b = await replicas.start(create_chat, "chat")
    ticker = await replicas.start(create_ticker, "ticker")
    old = token("alice")
    alice = [await open_ws(c, s, old) for c, s in ((chat_a, "chat"), (chat_b, "chat"))]
    alice.append(await open_ws(ticker, "ticker", old))
    bob = await connect(chat_b, "chat", "bob")
    await revoke_user(chat_a.app[CONTEXT], "alice")
    for ws in alice:
        assert await receive_close(ws) == 4011
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await chat_b.ws_connect("/chat/ws", params={"token": old})
    assert refused.value.status == 401
    # bob is untouched; a token issued after the revocation (next second) opens again
    await bob.send_json({"op": "sub", "ch": "lobby", "id": 1})
    await receive_op(bob, "subscribed")
    await asyncio.sleep(1.05)
    await (await connect(chat_b, "chat", "alice")).close()
    await bob.close()


async def test_a_revoked_token_does_not_refresh(replicas):
    client = await replicas.start(create_chat, "chat", token_refresh_seconds=60)
    stale = short_token("alice", 600, issued_ago=5)  # minted before the revocation
    ws = await open_ws(client, "chat", short_token("alice", 30))
    await revoke_user(client.app[CONTEXT], "alice")
    assert await receive_close(ws) == 4011
    await asyncio.sleep(1.05)
    fresh = await open_ws(client, "chat", short_token("alice", 2))
    await receive_op(fresh, "refresh")
    await fresh.send_json({"op": "refresh", "id": 1, "token": stale})
    error = await receive_op(fresh, "error")
    assert error["code"] == "unauthorized" and "revoked" in error["message"]
    await fresh.close()


async def test_handshakes_wait_until_the_replica_hears_revocations(replicas):
    """A connection opened before its replica hears revocations would outlive one
    announced meanwhile: the handshake waits for the replica to hear them (503 when it
    does not within HEARING_WAIT)."""
    client = await replicas.start(create_chat, "chat")
    known = client.app[CONTEXT].replica.known_revocations
    await eventually(lambda: known.hearing, what="the replica hears revocations")
    known.hearing = False  # as between a replica's start and its subscription
    started = time.monotonic()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/chat/ws", params={"token": token("alice")})
    assert refused.value.status == 503
    assert time.monotonic() - started >= HEARING_WAIT - 0.1
    opening = asyncio.ensure_future(open_ws(client, "chat", token("alice")))
    await asyncio.sleep(0.3)
    assert not opening.done()  # waiting, not refused
    known.hearing = True
    await (await opening).close()


async def test_one_user_holds_at_most_the_cap_per_replica(replicas):
    client = await replicas.start(create_chat, "chat", max_connections_per_user=3)
    sockets = [await connect(client, "chat", "alice") for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(client, "chat", "alice")
    assert refused.value.status == 429
    await (await connect(client, "chat", "bob")).close()  # others are not affected
    await sockets.pop().close()
    replica = client.app[CONTEXT].replica
    await eventually(lambda: replica.per_user["alice"] == 2, what="the slot freed")
    sockets.append(await connect(client, "chat", "alice"))  # a freed slot is usable
    for ws in sockets:
        await ws.close()


def ws_url(client, service: str = "chat") -> str:
    return str(client.make_url(f"/{service}/ws")).replace("http://", "ws://")


async def test_python_client_refreshes_over_the_socket_and_keeps_its_connection(replicas):
    server = await replicas.start(create_chat, "chat", token_refresh_seconds=1.5)
    minted: list[str] = []

    async def provider() -> str:
        minted.append(short_token("alice", 3))
        return minted[-1]

    async with Client(ws_url(server), short_token("alice", 2), token_provider=provider) as alice:
        await alice.subscribe("lobby")
        await asyncio.sleep(4.5)  # past the first token's exp and the second's
        assert alice.token_refreshes >= 2 and alice.close_codes == [] and alice.reconnects == 0
        assert await alice.publish("lobby", {"text": "after the refreshes"}) == 1


async def test_python_client_reconnects_with_a_new_token_after_4010_and_resumes(replicas):
    # no refresh window: the notice comes with the close, at exp
    server = await replicas.start(create_chat, "chat", token_refresh_seconds=0)

    async def provider() -> str:
        return short_token("reader", 2)

    url = ws_url(server)
    async with (
        Client(url, short_token("reader", 1), token_provider=provider, backoff_base=0.01) as reader,
        Client(url, token("writer")) as writer,
    ):
        await reader.subscribe("lobby")
        await writer.subscribe("lobby")
        acked = []
        for i in range(30):  # 3 s: past two of the reader's tokens
            acked.append(await writer.publish("lobby", {"text": f"m{i}"}))
            await asyncio.sleep(0.1)
        got: list[int] = []
        while len(got) < len(acked):
            got.append((await reader.next_message(within=10))[1])
        assert got == acked
        assert 4010 in reader.close_codes and reader.gaps == [] and reader.stopped_with is None


async def test_python_client_with_a_token_expired_while_away_connects_with_a_new_one(replicas):
    """A client back from sleep (or from an outage longer than its token's life) holds an
    expired token: the handshake is refused with 401, and the provider's token gets it in."""
    server = await replicas.start(create_chat, "chat")

    async def provider() -> str:
        return token("sleeper")

    expired = short_token("sleeper", -5, issued_ago=60)
    async with Client(
        ws_url(server), expired, token_provider=provider, backoff_base=0.01
    ) as sleeper:
        await sleeper.subscribe("lobby")
        assert sleeper.token != expired


async def test_python_client_without_provider_stops_on_a_401_handshake(replicas):
    """The same expired token would be refused for ever: ``start`` says so at once."""
    server = await replicas.start(create_chat, "chat")
    expired = short_token("sleeper", -5, issued_ago=60)
    client = Client(ws_url(server), expired, backoff_base=0.01)
    with pytest.raises(Stopped) as stopped:
        await client.start()
    assert stopped.value.status == 401 and stopped.value.close_code is None
    assert client.refused_with == 401 and client.reconnects == 0
    with pytest.raises(Stopped):
        await client.subscribe("lobby")


async def test_python_client_without_provider_stops_on_4010_and_on_revocation(replicas):
    server = await replicas.start(create_chat, "chat", token_refresh_seconds=0)
    async with Client(
        ws_url(server), short_token("alice", 2)
    ) as expiring:  # exp: whole seconds; >= 1 s left for the handshake
        await eventually(lambda: expiring.stopped_with == 4010, what="stopped with 4010")

    # a user no other test connects as: a revocation refuses tokens issued in the same
    # second, and the contract tests may share one Redis
    async def provider() -> str:
        return token("dora.revoked")

    async with Client(ws_url(server), token("dora.revoked"), token_provider=provider) as dora:
        await revoke_user(server.app[CONTEXT], "dora.revoked")
        await eventually(lambda: dora.stopped_with == 4011, what="stopped with 4011")


@pytest.mark.redis
async def test_a_kept_revocation_answer_stands_in_only_while_redis_is_heard(
    aiohttp_client, redis_url
):
    """A user connecting again soon is not asked about in Redis, but only while the
    backplane watch hears Redis; a reconnect of the live feed forgets every answer."""
    async with Partition(redis_url) as partition:
        backplane = RedisBackplane(partition.url)
        client = await aiohttp_client(create_chat(make_settings("chat"), backplane))
        replica = client.app[CONTEXT].replica
        known = replica.known_revocations
        await eventually(lambda: known.hearing, what="the replica hears revocations")
        await (await open_ws(client, "chat", token("alice"))).close()
        assert known.lookup("alice") == (True, None)
        partition.cut()
        replica.backplane_answered_at = time.monotonic()  # as the watch's last probe
        again = await open_ws(client, "chat", token("alice"))  # no read: Redis is cut
        await again.close()
        # the watch has not heard Redis for longer than the bound: the read is made, fails
        replica.backplane_answered_at = time.monotonic() - ANSWERED_WITHIN - 0.5
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/chat/ws", params={"token": token("alice")})
        assert refused.value.status == 503
        generation = known.generation
        partition.heal()
        await eventually(lambda: known.generation > generation, what="the feed resynced")
        assert known.lookup("alice") == (False, None)
