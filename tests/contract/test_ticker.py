"""Ticker gateway in-process: snapshot on subscribe, live prices, notifications."""

from __future__ import annotations

import asyncio

import orjson
from helpers import collect_msgs, receive_op
from replicas import connect

from services.kit.hub import ChannelHub
from services.ticker.app import create_app
from services.ticker.feed import FeedSettings, run_feed

API_KEY = "test-api-key"


async def test_personal_channel_is_subscribed_on_connect(replicas):
    client = await replicas.start(create_app, "ticker")
    ws = await connect(client, "ticker", "alice")
    auto = await receive_op(ws, "subscribed")
    assert auto["ch"] == "user:alice" and "id" not in auto


async def test_snapshot_is_the_latest_price_then_live(replicas):
    client = await replicas.start(create_app, "ticker")
    feed_backplane = replicas.new_backplane()
    hub = ChannelHub(feed_backplane, "ticker")
    for price in (100.0, 101.5, 99.25):
        await hub.publish("AAPL", orjson.dumps({"symbol": "AAPL", "price": price}))
    ws = await connect(client, "ticker", "alice")
    await receive_op(ws, "subscribed")  # personal channel
    await ws.send_json({"op": "sub", "id": 1, "ch": "AAPL"})
    snapshot = await receive_op(ws, "subscribed")
    assert [p["data"]["price"] for p in snapshot["publications"]] == [99.25]
    await hub.publish("AAPL", orjson.dumps({"symbol": "AAPL", "price": 98.0}))
    [live] = await collect_msgs(ws, 1)
    assert live["data"]["price"] == 98.0 and live["offset"] == snapshot["offset"] + 1


async def test_feed_prices_reach_a_subscriber(replicas):
    client = await replicas.start(create_app, "ticker")
    stop = asyncio.Event()
    settings = FeedSettings(symbols=("AAPL", "MSFT"), interval_seconds=0.05, internal_port=0)
    task = asyncio.create_task(run_feed(settings, stop, replicas.new_backplane()))
    try:
        ws = await connect(client, "ticker", "alice")
        await receive_op(ws, "subscribed")
        await ws.send_json({"op": "sub", "id": 1, "ch": "MSFT"})
        await receive_op(ws, "subscribed")
        live = await collect_msgs(ws, 3)
        assert all(m["ch"] == "MSFT" and m["data"]["price"] > 0 for m in live)
        offsets = [m["offset"] for m in live]
        assert offsets == list(range(offsets[0], offsets[0] + 3))
    finally:
        stop.set()
        await task


async def test_other_users_channel_is_forbidden_and_clients_cannot_publish(replicas):
    client = await replicas.start(create_app, "ticker")
    ws = await connect(client, "ticker", "alice")
    await receive_op(ws, "subscribed")
    await ws.send_json({"op": "sub", "id": 1, "ch": "user:bob"})
    assert (await receive_op(ws, "error"))["code"] == "forbidden"
    await ws.send_json({"op": "pub", "id": 2, "ch": "AAPL", "data": {"price": 1}})
    assert (await receive_op(ws, "error"))["code"] == "forbidden"


async def test_publish_api_notifies_a_user(replicas):
    client = await replicas.start(create_app, "ticker", api_key=API_KEY)
    ws = await connect(client, "ticker", "alice")
    await receive_op(ws, "subscribed")
    denied = await client.post("/ticker/api/publish", json={"user": "alice", "data": {}})
    assert denied.status == 401
    response = await client.post(
        "/ticker/api/publish",
        json={"user": "alice", "data": {"text": "order filled"}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status == 200
    body = await response.json()
    assert body["channel"] == "user:alice" and body["offset"] == 1
    [note] = await collect_msgs(ws, 1)
    assert note["ch"] == "user:alice" and note["data"]["text"] == "order filled"
    bad = await client.post(
        "/ticker/api/publish",
        json={"user": "alice", "channel": "AAPL", "data": {}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert bad.status == 400


async def test_publish_api_refuses_data_nested_too_deep_with_400(replicas):
    client = await replicas.start(create_app, "ticker", api_key=API_KEY)
    deep = "[" * 300 + "]" * 300  # orjson parses it but could not serialise it again
    response = await client.post(
        "/ticker/api/publish",
        data='{"user": "alice", "data": {"deep": ' + deep + "}}",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "nested at most 32 levels" in await response.text()


async def notify(hub: ChannelHub, user: str, n: int) -> int:
    _, offset = await hub.publish(f"user:{user}", orjson.dumps({"n": n}))
    return offset


async def test_resubscribing_the_personal_channel_with_since_resumes_it_exactly(replicas):
    client = await replicas.start(create_app, "ticker")
    hub = ChannelHub(replicas.new_backplane(), "ticker")
    ws = await connect(client, "ticker", "alice")
    first = await receive_op(ws, "subscribed")
    for n in range(3):
        await notify(hub, "alice", n)
    assert [m["offset"] for m in await collect_msgs(ws, 3)] == [1, 2, 3]
    await ws.close()
    for n in range(3, 8):  # while alice is away
        await notify(hub, "alice", n)

    again = await connect(client, "ticker", "alice")
    automatic = await receive_op(again, "subscribed")
    assert automatic["recovered"] is False and automatic["offset"] == 8
    since = {"epoch": first["epoch"], "offset": 3}
    await again.send_json({"op": "sub", "id": 1, "ch": "user:alice", "since": since})
    resumed = await receive_op(again, "subscribed")
    assert resumed["id"] == 1 and resumed["recovered"] is True
    assert [p["offset"] for p in resumed["publications"]] == [4, 5, 6, 7, 8]
    assert [p["data"]["n"] for p in resumed["publications"]] == [3, 4, 5, 6, 7]
    await notify(hub, "alice", 8)
    [live] = await collect_msgs(again, 1)
    assert live["offset"] == 9  # once: the automatic subscription was replaced
    await notify(hub, "alice", 9)
    [after] = await collect_msgs(again, 1)
    assert after["offset"] == 10


async def test_a_bad_since_for_the_personal_channel_keeps_the_subscription(replicas):
    client = await replicas.start(create_app, "ticker")
    hub = ChannelHub(replicas.new_backplane(), "ticker")
    ws = await connect(client, "ticker", "alice")
    await receive_op(ws, "subscribed")
    await ws.send_json({"op": "sub", "id": 1, "ch": "user:alice", "since": {"epoch": 1}})
    assert (await receive_op(ws, "error"))["code"] == "bad_request"
    await notify(hub, "alice", 0)
    [note] = await collect_msgs(ws, 1)
    assert note["ch"] == "user:alice" and note["data"]["n"] == 0
