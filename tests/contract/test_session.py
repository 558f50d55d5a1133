"""One connection's life on a replica: the connect hook's failures, the closing
handshake (drain), close-code labels, and the raw writer sharing the socket with aiohttp."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from helpers import eventually, receive_close, receive_op
from partition import Partition
from replicas import connect, make_settings, token

from clients.wwws import Client
from services.chat.app import create_app as create_chat
from services.kit import (
    CONTEXT,
    BackplaneUnavailable,
    Connection,
    ServiceContext,
    ServiceSpec,
    build_app,
)
from services.kit.app import close_connections
from services.kit.backplane import MemoryBackplane, RedisBackplane, broker_redis
from services.telephony.app import create_app as create_telephony
from services.ticker.app import create_app as create_ticker


def spec_failing_with(error: Exception) -> ServiceSpec[None]:
    async def on_connect(ctx: ServiceContext[None], conn: Connection) -> None:
        raise error

    return ServiceSpec(name="failing", on_connect=on_connect)


@pytest.mark.parametrize(
    ("error", "code"),
    [(BackplaneUnavailable("redis is restarting"), 1013), (RuntimeError("bug"), 1011)],
    ids=["backplane-unavailable", "anything-else"],
)
async def test_a_failing_connect_hook_closes_with_a_code(aiohttp_client, caplog, error, code):
    app = build_app(make_settings("failing"), spec_failing_with(error), MemoryBackplane())
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/failing/ws", params={"token": token("alice")})
    message = await ws.receive(timeout=5)  # no hello: the connection was never set up
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == code
    failures = [r for r in caplog.records if getattr(r, "event", None) == "connect_failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is None  # one line, no traceback
    assert client.app[CONTEXT].replica.connections == set()


@pytest.mark.redis
async def test_ticker_handshake_with_redis_unreachable_is_refused_with_503(
    aiohttp_client, redis_url
):
    """The handshake asks the backplane whether the token was revoked: without an answer
    nothing is upgraded (503, retry with backoff), and it works again once Redis does."""
    async with Partition(redis_url) as partition:
        settings = make_settings("ticker", backplane_grace_seconds=0)
        client = await aiohttp_client(create_ticker(settings, RedisBackplane(partition.url)))
        ws = await connect(client, "ticker")
        await receive_op(ws, "subscribed")  # the personal channel, while Redis answers
        await ws.close()
        partition.cut()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ticker/ws", params={"token": token("alice")})
        assert refused.value.status == 503
        assert client.app[CONTEXT].replica.connections == set()
        partition.heal()
        ws = await eventually(lambda: _subscribed_on_connect(client), what="reconnect works")
        await ws.close()


async def _subscribed_on_connect(client):
    """A ticker connection that got its hello (only sent once the connect hook worked)."""
    ws = await client.ws_connect("/ticker/ws", params={"token": token("alice")})
    message = await ws.receive(timeout=5)
    if message.type is aiohttp.WSMsgType.TEXT and message.json()["op"] == "hello":
        return ws
    await ws.close()
    return None


@pytest.mark.redis
async def test_clients_of_a_replica_cut_off_from_redis_are_moved_with_1013(
    aiohttp_client, redis_url
):
    async with Partition(redis_url) as partition:
        settings = make_settings("chat", backplane_grace_seconds=0.3)
        client = await aiohttp_client(create_chat(settings, RedisBackplane(partition.url)))
        alice = await connect(client, "chat", "alice")
        bob = await connect(client, "chat", "bob")
        partition.cut()
        assert await receive_close(alice) == 1013
        assert await receive_close(bob) == 1013
        ctx = client.app[CONTEXT]

        async def refused() -> bool:
            try:
                ws = await client.ws_connect("/chat/ws", params={"token": token("carol")})
            except aiohttp.WSServerHandshakeError as error:
                return error.status == 503
            await ws.close()
            return False

        assert await eventually(refused, what="handshakes refused while Redis is away")
        partition.heal()
        await eventually(lambda: not ctx.replica.backplane_lost, what="backplane back")
        carol = await connect(client, "chat", "carol")
        await carol.close()


@pytest.mark.redis
async def test_a_silent_pubsub_connection_is_reopened_and_nothing_is_missed(
    aiohttp_client, redis_url, monkeypatch
):
    """A pub/sub connection that stops carrying publications but never closes (a proxy or
    a NAT that lost the path, a subscription left on a Redis the primary no longer feeds):
    commands still work, so publishers are acknowledged, and only the replica's probes
    notice. It opens the connection again, and its subscriber gets every acknowledged
    publication once, in order, the missed ones read from the stream."""
    monkeypatch.setattr(broker_redis, "PROBE_SECONDS", 0.3)
    async with Partition(redis_url) as partition:
        backplane = RedisBackplane(partition.url)
        server = await aiohttp_client(create_chat(make_settings("chat"), backplane))
        url = str(server.make_url("/chat/ws")).replace("http://", "ws://")
        async with Client(url, token("alice")) as alice, Client(url, token("bob")) as bob:
            await alice.subscribe("quiet-line")  # a publisher must be a member
            await bob.subscribe("quiet-line")
            first = await alice.publish("quiet-line", {"text": "before"})
            received = [await anext(bob.messages())]
            assert partition.freeze_subscribers() >= 1
            sent = {first: "before"}
            for i in range(10):
                sent[await alice.publish("quiet-line", {"text": f"frozen {i}"})] = f"frozen {i}"

            async def everything() -> bool:
                received.extend(bob.drain_messages())
                return bool(received) and received[-1][1] >= max(sent)

            await eventually(everything, timeout=15, what="the publications after the freeze")
            assert [(o, d["text"]) for _, o, d in received] == sorted(sent.items())
            assert isinstance(backplane.broker, broker_redis.RedisBroker)
            assert backplane.broker.pubsub_reopened >= 1


@pytest.mark.redis
async def test_a_malformed_pubsub_message_does_not_stop_live_delivery(aiohttp_client, redis_url):
    """Something else publishes garbage on a channel's pub/sub name: it is logged and
    dropped, and the replica's one live reader goes on delivering."""
    backplane = RedisBackplane(redis_url)
    server = await aiohttp_client(create_chat(make_settings("chat"), backplane))
    url = str(server.make_url("/chat/ws")).replace("http://", "ws://")
    async with Client(url, token("alice")) as alice, Client(url, token("bob")) as bob:
        await alice.subscribe("garbled")
        await bob.subscribe("garbled")
        hub = server.app[CONTEXT].hub
        _, _, pubsub_name = broker_redis.stream_keys(hub.backplane_channel("garbled"))
        await backplane.connection.client.publish(pubsub_name, b"no offset here")
        offset = await alice.publish("garbled", {"text": "after the garbage"})
        _, got, data = await asyncio.wait_for(anext(bob.messages()), 5)
        assert (got, data["text"]) == (offset, "after the garbage")


async def test_drain_completes_the_closing_handshake(replicas):
    server = await replicas.start(create_chat, "chat")
    sockets = [await connect(server, "chat", f"user{i}") for i in range(5)]
    readers = [asyncio.ensure_future(ws.receive()) for ws in sockets]
    await asyncio.sleep(0)  # every session waits for a frame, as an idle one does
    await close_connections(server.app[CONTEXT], 1001, "server going away")
    for ws, reader in zip(sockets, readers, strict=True):
        message = await asyncio.wait_for(reader, 5)
        assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1001
        # the client's reply reached the server before the server dropped the socket
        assert ws.close_code == 1001
    # close_connections returned only once every session had ended and been counted
    registry = server.app[CONTEXT].metrics.registry
    closed = {"service": "chat", "code": "1001"}
    assert registry.get_sample_value("wwws_connections_closed_total", closed) == 5


async def test_every_client_of_a_drained_replica_reconnects_at_once(replicas):
    server = await replicas.start(create_chat, "chat")
    url = str(server.make_url("/chat/ws")).replace("http://", "ws://")
    # A backoff of up to 1000 s: reconnecting within the test means "at once" (1001).
    clients = [
        Client(url, token(f"user{i}"), backoff_base=1000.0, backoff_cap=1000.0) for i in range(5)
    ]
    for client in clients:
        await client.start()
    try:
        await server.app.shutdown()  # the drain's last step: 1001 to everyone
        for client in clients:
            await eventually(lambda c=client: c.reconnects == 1, what="a reconnect")
            await client.wait_connected(within=5)
    finally:
        for client in clients:
            await client.close()


async def test_client_chosen_close_codes_are_bucketed(replicas):
    server = await replicas.start(create_chat, "chat")
    for code in (3001, 3999, 4321, 4999, 4001, 1000):
        ws = await connect(server, "chat")
        await ws.close(code=code)
    metrics = server.app[CONTEXT].metrics

    def labels() -> set[str]:
        return {
            sample.labels["code"]
            for family in metrics.registry.collect()
            if family.name == "wwws_connections_closed"
            for sample in family.samples
            if sample.name.endswith("_total")
        }

    assert await eventually(lambda: labels() == {"3xxx", "4xxx", "4001", "1000"}, what="labels")


async def test_data_nested_deeper_than_the_limit_is_a_bad_request(replicas):
    server = await replicas.start(create_chat, "chat")
    ws = await connect(server, "chat")
    await ws.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(ws, "subscribed")
    deep = "[" * 300 + "]" * 300
    await ws.send_str('{"op":"pub","id":2,"ch":"lobby","data":{"text":"x","deep":' + deep + "}}")
    error = await receive_op(ws, "error")
    assert error["code"] == "bad_request" and "nested deeper than 32" in error["message"]
    await ws.send_json({"op": "pub", "id": 3, "ch": "lobby", "data": {"text": "still open"}})
    assert (await receive_op(ws, "ack"))["id"] == 3


async def test_pongs_never_interleave_with_the_raw_frames(replicas):
    """aiohttp answers pings on the same socket the outbound queue writes to."""
    server = await replicas.start(create_chat, "chat")
    reader = await connect(server, "chat", "reader", autoping=False)
    await reader.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(reader, "subscribed")
    writer = await connect(server, "chat", "writer")
    await writer.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(writer, "subscribed")
    text = "y" * 1500
    for i in range(20):
        await reader.ping(str(i).encode())
        await writer.send_str(
            orjson.dumps({"op": "pub", "ch": "lobby", "data": {"text": text}}).decode()
        )
    pongs, msgs = [], []
    while len(pongs) < 20 or sum(m["op"] == "msg" for m in msgs) < 20:
        message = await reader.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.PONG:
            pongs.append(message.data)
        else:
            assert message.type is aiohttp.WSMsgType.TEXT, message
            msgs.append(orjson.loads(message.data))
    assert pongs == [str(i).encode() for i in range(20)]
    assert [m["offset"] for m in msgs if m["op"] == "msg"] == list(range(1, 21))
    assert {m["op"] for m in msgs} <= {"msg", "join", "members_diff"}
    assert all(m["data"]["text"] == text for m in msgs if m["op"] == "msg")


async def test_a_signal_nested_300_deep_is_refused_and_the_call_goes_on(replicas):
    """The reported case: orjson parsed it, relaying it failed to serialise (1011)."""
    server = await replicas.start(create_telephony, "telephony")
    alice = await connect(server, "telephony", "alice")
    bob = await connect(server, "telephony", "bob")
    await alice.send_json({"op": "call", "id": 1, "to": "bob"})
    call_id = (await receive_op(alice, "ringing"))["call_id"]
    await receive_op(bob, "incoming")
    await bob.send_json({"op": "answer", "call_id": call_id})
    await receive_op(alice, "answered")
    deep = "[" * 300 + "]" * 300
    await alice.send_str(f'{{"op":"signal","call_id":"{call_id}","data":{{"x":{deep}}}}}')
    error = await receive_op(alice, "error")
    assert error["code"] == "bad_request" and "nested deeper than 32" in error["message"]
    await alice.send_json({"op": "signal", "call_id": call_id, "data": {"type": "offer"}})
    assert (await receive_op(bob, "signal"))["data"] == {"type": "offer"}


async def test_the_kit_endpoint_drops_aiohttps_http_state_at_the_upgrade(aiohttp_client):
    """The release (http_state_release.py) is the kit's, not a service's: a replica's
    upgraded connection no longer holds aiohttp's HTTP parser or request queue, and
    speaks the protocol as before."""
    client = await aiohttp_client(create_chat(make_settings("chat"), MemoryBackplane()))
    ws = await connect(client, "chat")
    (conn,) = client.app[CONTEXT].replica.connections
    protocol = conn.ws._req.protocol
    assert protocol._parser is None and protocol._messages == ()
    await ws.send_json({"op": "sub", "ch": "lobby", "id": 1})
    await receive_op(ws, "subscribed")
    await ws.send_json({"op": "pub", "ch": "lobby", "id": 2, "data": {"text": "hi"}})
    assert (await receive_op(ws, "msg"))["data"]["text"] == "hi"
    await ws.close()
    assert ws.close_code == 1000


def _read_loop_locals() -> dict[str, object]:
    """The local variables of the (one) session read loop now waiting for a frame."""
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        while coro is not None:
            code = getattr(coro, "cr_code", None)
            if code is not None and code.co_name == "_read_frames":
                found.append(coro.cr_frame.f_locals)
            coro = getattr(coro, "cr_await", None)
    (frame_locals,) = found
    return frame_locals


async def test_the_read_loop_keeps_no_frame_while_it_waits_for_the_next(aiohttp_client):
    """An idle connection's last frame (its heartbeat's pong, or its last command) is not
    kept alive by the session's read loop for as long as the client stays quiet."""
    client = await aiohttp_client(create_chat(make_settings("chat"), MemoryBackplane()))
    ws = await connect(client, "chat")
    (conn,) = client.app[CONTEXT].replica.connections
    await ws.send_json({"op": "sub", "ch": "lobby", "id": 1})
    await receive_op(ws, "subscribed")
    assert "message" not in _read_loop_locals()
    conn.ping_outstanding = True  # as the heartbeat leaves it after a ping
    await ws.pong(b"heartbeat")
    await eventually(lambda: not conn.ping_outstanding, what="the pong read")
    assert "message" not in _read_loop_locals()
    await ws.close()
    assert ws.close_code == 1000
