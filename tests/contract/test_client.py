"""The Python client reconnects by close code and resumes without loss or duplicates."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from helpers import eventually
from replicas import token

from clients.wwws import Client, ClientError, Stopped
from services.chat.app import create_app
from services.kit import CONTEXT
from services.kit.hub import ChannelHub
from services.kit.outbound import close_frame, text_frame
from services.kit.protocol import encode
from services.telephony.app import create_app as telephony_app
from services.ticker.app import create_app as ticker_app


def ws_url(client) -> str:
    return str(client.make_url("/chat/ws")).replace("http://", "ws://")


async def test_client_resumes_after_its_connection_drops(replicas):
    server = await replicas.start(create_app, "chat")
    url = ws_url(server)
    async with Client(url, token("reader"), backoff_base=0.01) as reader:
        await reader.subscribe("lobby")
        async with Client(url, token("writer")) as writer:
            await writer.subscribe("lobby")
            acked = [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5)]
            for conn in list(server.app[CONTEXT].replica.connections):
                if conn.user == "reader":
                    conn.close(1011, "simulated crash")
            acked += [await writer.publish("lobby", {"text": f"m{i}"}) for i in range(5, 10)]
            got: list[int] = []
            messages = reader.messages()
            while len(got) < 10:
                _channel, offset, _data = await asyncio.wait_for(messages.__anext__(), 10)
                got.append(offset)
            assert got == acked == list(range(1, 11))
            assert reader.reconnects >= 1 and reader.gaps == []


async def test_client_stops_on_4xxx_and_reports_errors(replicas):
    server = await replicas.start(create_app, "chat")
    async with Client(ws_url(server), token("alice")) as client:
        try:
            await client.publish("lobby", {"text": "not subscribed"})
        except ClientError as error:
            assert error.code == "forbidden"
        else:
            raise AssertionError("expected forbidden")
        for conn in list(server.app[CONTEXT].replica.connections):
            conn.close(4003, "go away")
        await eventually(lambda: client.stopped_with is not None, what="the client stops")
        assert client.stopped_with == 4003
        # stopped: what waits for a connection or a message hears so, none of it hangs
        with pytest.raises(Stopped) as stopped:
            await client.publish("lobby", {"text": "after the stop"})
        assert stopped.value.close_code == 4003
        assert [m async for m in client.messages()] == []
        with pytest.raises(Stopped):
            await client.next_message(within=30)
        with pytest.raises(Stopped):
            await client.next_event(within=30)


async def test_client_trusts_the_close_frame_when_the_socket_is_gone_first(aiohttp_client):
    """A server (or proxy) that drops TCP right behind its 1001 close frame: aiohttp's
    ``ws.close_code`` then reads 1006, but the frame said "reconnect at once"."""
    handshakes = 0

    async def drop_after_close_frame(request: web.Request) -> web.StreamResponse:
        nonlocal handshakes
        handshakes += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        hello = text_frame(encode({"op": "hello", "node": "n", "user": "u", "heartbeat": 25}))
        if handshakes == 1:
            request.transport.write(hello + close_frame(1001, b"server going away"))
            request.transport.close()
            return ws
        request.transport.write(hello)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", drop_after_close_frame)
    server = await aiohttp_client(app)
    url = str(server.make_url("/ws")).replace("http://", "ws://")
    # With a backoff of up to 1000 s, a second handshake within the test is "at once".
    async with Client(url, token("alice"), backoff_base=1000.0, backoff_cap=1000.0):
        await eventually(lambda: handshakes == 2, timeout=5.0, what="an immediate reconnect")


def ticker_url(client) -> str:
    return str(client.make_url("/ticker/ws")).replace("http://", "ws://")


async def drop_connections(server, user: str) -> None:
    for conn in list(server.app[CONTEXT].replica.connections):
        if conn.user == user:
            conn.close(1011, "simulated crash")


async def test_client_holds_a_ticker_connection_and_subscribes(replicas):
    server = await replicas.start(ticker_app, "ticker")
    hub = ChannelHub(replicas.new_backplane(), "ticker")
    await hub.publish("AAPL", orjson.dumps({"symbol": "AAPL", "price": 10.0}))
    async with Client(ticker_url(server), token("trader"), backoff_base=0.01) as client:
        reply = await client.subscribe("AAPL")
        assert reply["recovered"] is False and reply["ch"] == "AAPL"
        await hub.publish("AAPL", orjson.dumps({"symbol": "AAPL", "price": 11.0}))
        prices = []
        while len(prices) < 2:
            channel, _offset, data = await client.next_message(within=10)
            if channel == "AAPL":
                prices.append(data["price"])
        assert prices == [10.0, 11.0]
        await drop_connections(server, "trader")
        await eventually(lambda: client.reconnects == 1 and client.live, what="one reconnect")
        await hub.publish("AAPL", orjson.dumps({"symbol": "AAPL", "price": 12.0}))
        channel, _offset, data = await client.next_message(within=10)
        assert (channel, data["price"]) == ("AAPL", 12.0)
        assert client.reconnects == 1 and client.dropped == [] and client.close_codes == [1011]


async def test_client_misses_no_notification_across_a_reconnect(replicas):
    server = await replicas.start(ticker_app, "ticker")
    hub = ChannelHub(replicas.new_backplane(), "ticker")
    async with Client(ticker_url(server), token("notified"), backoff_base=0.2) as client:
        sent = [await hub.publish("user:notified", orjson.dumps({"n": n})) for n in range(3)]
        await drop_connections(server, "notified")
        # published while the client is away or resubscribing, with more than the
        # personal channel's window (20) of them: only `since` can bring them all back
        for n in range(3, 40):
            sent.append(await hub.publish("user:notified", orjson.dumps({"n": n})))
        await eventually(lambda: client.live and client.reconnects == 1, what="back")
        for n in range(40, 45):
            sent.append(await hub.publish("user:notified", orjson.dumps({"n": n})))
        got = []
        while len(got) < 45:
            got.append(await client.next_message(within=10))
        assert [(ch, data["n"]) for ch, _, data in got] == [("user:notified", n) for n in range(45)]
        assert [offset for _, offset, _ in got] == [offset for _, offset in sent]
        assert client.gaps == [] and client.drain_messages() == []


async def test_client_watches_again_after_a_reconnect_and_records_close_codes(replicas):
    server = await replicas.start(telephony_app, "telephony")
    url = str(server.make_url("/telephony/ws")).replace("http://", "ws://")
    async with Client(url, token("watcher"), backoff_base=0.01) as watcher:
        assert await watcher.watch(["bob"]) == {"bob": "offline"}
        await drop_connections(server, "watcher")
        await eventually(lambda: watcher.reconnects == 1 and watcher.live, what="back")
        async with Client(url, token("bob")):
            # heard only if the new connection watches bob again
            await eventually(lambda: watcher.presence == {"bob": "online"}, what="online")
        await eventually(lambda: watcher.presence == {"bob": "offline"}, what="offline")
        assert watcher.close_codes == [1011]


async def test_client_send_relays_a_frame_without_reply(replicas):
    server = await replicas.start(telephony_app, "telephony")
    url = str(server.make_url("/telephony/ws")).replace("http://", "ws://")
    async with Client(url, token("alice")) as alice, Client(url, token("bob")) as bob:
        ringing = await alice.request({"op": "call", "to": "bob"})
        incoming = await bob.next_event()
        assert incoming["op"] == "incoming" and incoming["call_id"] == ringing["call_id"]
        assert await bob.send({"op": "answer", "call_id": ringing["call_id"]})
        assert (await alice.next_event())["op"] == "answered"


async def test_client_retries_a_publication_once_with_its_idempotency_key(replicas):
    """A publication sent again with the same key is stored once, across a reconnect:
    what makes ``retry_for`` (and a user's "send again") safe after a lost ack."""
    server = await replicas.start(create_app, "chat")
    async with Client(ws_url(server), token("writer"), backoff_base=0.01) as writer:
        await writer.subscribe("lobby")
        first = await writer.publish_again("lobby", {"text": "once"}, "key-1")
        for conn in list(server.app[CONTEXT].replica.connections):
            conn.close(1011, "simulated crash")
        again = await writer.publish_again("lobby", {"text": "once"}, "key-1", retry_for=10)
        other = await writer.publish("lobby", {"text": "twice"}, retry_for=10)
        assert again == first and other == first + 1
        async with Client(ws_url(server), token("reader")) as reader:
            reply = await reader.subscribe("lobby")
            assert [p["data"]["text"] for p in reply["publications"]] == ["once", "twice"]


async def test_client_keeps_every_notification_after_the_store_lost_its_data(replicas):
    """Redis lost its data and the replica found the stream gone before anything new was
    published (the unsolicited `subscribed` has epoch "" and offset 0): what is published
    into the new stream afterwards reaches the client, every one."""
    server = await replicas.start(ticker_app, "ticker")
    hub = ChannelHub(replicas.new_backplane(), "ticker")
    async with Client(ticker_url(server), token("notified"), backoff_base=0.2) as client:
        for n in range(3):
            await hub.publish("user:notified", orjson.dumps({"n": n}))
        got = [await client.next_message(within=10) for _ in range(3)]
        replicas_hub = server.app[CONTEXT].hub
        replicas.new_backplane.flush()
        replicas_hub._on_resync(replicas_hub.backplane_channel("user:notified"))  # reconnect
        await eventually(lambda: client.gaps, what="the lost stream announced")
        for n in range(3, 8):
            await hub.publish("user:notified", orjson.dumps({"n": n}))
        while len(got) < 8:
            got.append(await client.next_message(within=10))
        assert [data["n"] for _, _, data in got] == list(range(8))
        assert client.gaps == [("user:notified", 3, 0)]


async def test_client_follows_the_servers_heartbeat_and_leaves_a_silent_server(
    aiohttp_client,
):
    """The server pings every `interval` (hello); the client answers. A server that falls
    silent (no frame, no ping) for 2 x interval + 5 s is taken for dead: reconnect."""
    handshakes = 0
    pongs = 0

    async def server(request: web.Request) -> web.StreamResponse:
        nonlocal handshakes, pongs
        handshakes += 1
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_str(
            encode({"op": "hello", "node": "n", "user": "u", "heartbeat": 0.5}).decode()
        )
        if handshakes == 1:
            for _ in range(4):  # alive: pings, answered
                await ws.ping(b"hb")
                message = await ws.receive(timeout=2)
                pongs += message.type is web.WSMsgType.PONG
                await asyncio.sleep(0.5)
            await asyncio.sleep(30)  # then silent: no close frame, no ping
        else:
            async for _ in ws:
                pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", server)
    url = str((await aiohttp_client(app)).make_url("/ws")).replace("http://", "ws://")
    async with Client(url, token("alice"), backoff_base=0.01) as client:
        await eventually(lambda: handshakes == 2, timeout=12.0, what="a reconnect")
        assert pongs == 4
        assert client.silent_drops == 1
        assert client.heartbeat_interval == 0.5
