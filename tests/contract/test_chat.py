"""Chat rooms in-process: pub/ack, fan-out across replicas, history, resume."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from helpers import collect_msgs, receive_close, receive_op
from replicas import connect

from services.chat.app import create_app
from services.kit import CONTEXT


async def join(ws, room, id_=1, since=None):
    frame = {"op": "sub", "id": id_, "ch": room}
    if since is not None:
        frame["since"] = since
    await ws.send_json(frame)
    return await receive_op(ws, "subscribed")


async def test_pub_is_acked_stamped_and_delivered(replicas):
    client = await replicas.start(create_app, "chat")
    alice = await connect(client, "chat", "alice")
    bob = await connect(client, "chat", "bob")
    await join(alice, "lobby")
    await join(bob, "lobby")
    before = time.time() * 1000
    await alice.send_json(
        {"op": "pub", "id": 7, "ch": "lobby", "data": {"text": "hi", "user": "mallory"}}
    )
    ack = await receive_op(alice, "ack")
    assert ack == {"op": "ack", "id": 7, "ch": "lobby", "offset": 1}
    [msg] = await collect_msgs(bob, 1)
    assert msg["ch"] == "lobby" and msg["offset"] == 1
    assert msg["data"]["text"] == "hi"
    assert msg["data"]["user"] == "alice"  # stamped from the token, not the client
    assert before <= msg["data"]["ts"] <= time.time() * 1000 + 1


async def test_fan_out_across_replicas(replicas):
    one = await replicas.start(create_app, "chat", node_id="one")
    two = await replicas.start(create_app, "chat", node_id="two")
    alice = await connect(one, "chat", "alice")
    bob = await connect(two, "chat", "bob")
    await join(alice, "lobby")
    await join(bob, "lobby")
    for i in range(5):
        await alice.send_json({"op": "pub", "id": i, "ch": "lobby", "data": {"text": str(i)}})
    got = await collect_msgs(bob, 5)
    assert [m["data"]["text"] for m in got] == ["0", "1", "2", "3", "4"]
    assert [m["offset"] for m in got] == [1, 2, 3, 4, 5]


async def test_pub_without_subscription_is_forbidden(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await ws.send_json({"op": "pub", "id": 1, "ch": "lobby", "data": {"text": "hi"}})
    error = await receive_op(ws, "error")
    assert error["code"] == "forbidden" and error["id"] == 1


async def test_empty_and_oversized_text(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await join(ws, "lobby")
    await ws.send_json({"op": "pub", "id": 1, "ch": "lobby", "data": {"text": "  "}})
    assert (await receive_op(ws, "error"))["code"] == "bad_request"
    await ws.send_json({"op": "pub", "id": 2, "ch": "lobby", "data": {"text": "x" * 2001}})
    assert (await receive_op(ws, "error"))["code"] == "too_large"


async def test_resume_with_since_gets_exactly_the_missed(replicas):
    client = await replicas.start(create_app, "chat")
    alice = await connect(client, "chat", "alice")
    bob = await connect(client, "chat", "bob")
    await join(alice, "lobby")
    first = await join(bob, "lobby")
    for i in range(3):
        await alice.send_json({"op": "pub", "id": i, "ch": "lobby", "data": {"text": f"a{i}"}})
        await receive_op(alice, "ack")
    seen = await collect_msgs(bob, 3)
    await bob.close()
    for i in range(3, 7):
        await alice.send_json({"op": "pub", "id": i, "ch": "lobby", "data": {"text": f"a{i}"}})
        await receive_op(alice, "ack")
    bob = await connect(client, "chat", "bob")
    since = {"epoch": first["epoch"], "offset": seen[-1]["offset"]}
    resumed = await join(bob, "lobby", since=since)
    assert resumed["recovered"] is True
    # the room had no stream when bob joined (epoch ""); its first publication made one
    assert first["epoch"] == "" and resumed["epoch"]
    assert [p["offset"] for p in resumed["publications"]] == [4, 5, 6, 7]
    assert [p["data"]["text"] for p in resumed["publications"]] == ["a3", "a4", "a5", "a6"]
    assert resumed["offset"] == 7


async def test_resume_with_unknown_epoch_is_not_recovered(replicas):
    client = await replicas.start(create_app, "chat")
    alice = await connect(client, "chat", "alice")
    await join(alice, "lobby")
    await alice.send_json({"op": "pub", "id": 1, "ch": "lobby", "data": {"text": "x"}})
    await receive_op(alice, "ack")
    bob = await connect(client, "chat", "bob")
    resumed = await join(bob, "lobby", since={"epoch": "gone", "offset": 0})
    assert resumed["recovered"] is False
    assert [p["offset"] for p in resumed["publications"]] == [1]


async def test_history_pages_backwards(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await join(ws, "lobby")
    for i in range(10):
        await ws.send_json({"op": "pub", "id": i, "ch": "lobby", "data": {"text": str(i)}})
        await receive_op(ws, "ack")
    await ws.send_json({"op": "history", "id": "h", "ch": "lobby", "limit": 4})
    page = await receive_op(ws, "history")
    assert [p["offset"] for p in page["publications"]] == [7, 8, 9, 10]
    await ws.send_json({"op": "history", "id": "h2", "ch": "lobby", "before": 7, "limit": 4})
    page = await receive_op(ws, "history")
    assert [p["offset"] for p in page["publications"]] == [3, 4, 5, 6]


async def test_publish_flood_is_rate_limited_then_closed_4129(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await join(ws, "lobby")
    for i in range(90):
        await ws.send_json({"op": "pub", "id": i, "ch": "lobby", "data": {"text": "spam"}})
    acks = refusals = 0
    while True:
        message = await ws.receive(timeout=5)
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        frame = message.json()
        acks += frame["op"] == "ack"
        refusals += frame.get("code") == "rate_limited"
    assert acks >= 40  # the burst (plus what refilled while sending)
    assert refusals == 20  # 20 strikes allowed, the 21st closes
    assert ws.close_code == 4129


async def test_membership_join_leave_and_members_across_replicas(replicas):
    one = await replicas.start(create_app, "chat", node_id="one")
    two = await replicas.start(create_app, "chat", node_id="two")
    alice = await connect(one, "chat", "alice")
    await join(alice, "lobby")
    assert await receive_op(alice, "join") == {"op": "join", "ch": "lobby", "user": "alice"}
    bob_phone = await connect(two, "chat", "bob")
    await join(bob_phone, "lobby")
    assert await receive_op(alice, "join") == {"op": "join", "ch": "lobby", "user": "bob"}
    bob_laptop = await connect(one, "chat", "bob")
    await join(bob_laptop, "lobby")  # bob is already in: no second join
    await alice.send_json({"op": "members", "id": "m", "ch": "lobby"})
    members = await receive_op(alice, "members")
    assert members == {"op": "members", "id": "m", "ch": "lobby", "users": ["alice", "bob"]}
    await bob_phone.close()
    await bob_laptop.send_json({"op": "unsub", "id": 9, "ch": "lobby"})
    await receive_op(bob_laptop, "unsubscribed")
    # one leave, only after bob's last connection left the room
    assert await receive_op(alice, "leave") == {"op": "leave", "ch": "lobby", "user": "bob"}
    await alice.send_json({"op": "members", "id": "m2", "ch": "lobby"})
    assert (await receive_op(alice, "members"))["users"] == ["alice"]


async def test_a_burst_of_joins_reaches_a_member_as_a_few_diffs_and_members_pages(replicas):
    one = await replicas.start(create_app, "chat", node_id="one")
    two = await replicas.start(create_app, "chat", node_id="two")
    watcher = await connect(one, "chat", "watcher")
    await join(watcher, "lobby")
    await receive_op(watcher, "join")
    sockets = [await connect((one, two)[n % 2], "chat", f"user{n:02}") for n in range(60)]
    await asyncio.gather(*(join(ws, "lobby", id_=n) for n, ws in enumerate(sockets)))
    joined: set[str] = set()
    frames = 0
    while len(joined) < 60:
        frame = (await watcher.receive(timeout=5)).json()
        if frame["op"] == "join":
            joined.add(frame["user"])
        elif frame["op"] == "members_diff":
            assert frame["ch"] == "lobby" and frame["leaves"] == []
            assert frame["joins"] == sorted(frame["joins"])
            joined.update(frame["joins"])
        else:
            continue
        frames += 1
    assert joined == {f"user{n:02}" for n in range(60)}
    assert frames < 30, f"{frames} membership frames for 60 joins: not coalesced"
    # members in pages: `next` is the `after` of the following page
    pages: list[list[str]] = []
    after = None
    while True:
        request: dict[str, Any] = {"op": "members", "id": "p", "ch": "lobby", "limit": 25}
        if after is not None:
            request["after"] = after
        await watcher.send_json(request)
        reply = await receive_op(watcher, "members")
        pages.append(reply["users"])
        after = reply.get("next")
        if after is None:
            break
    assert [len(page) for page in pages] == [25, 25, 11]
    assert [user for page in pages for user in page] == sorted({"watcher"} | joined)
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "9"}, {"after": 3}):
        await watcher.send_json({"op": "members", "id": "b", "ch": "lobby", **bad})
        assert (await receive_op(watcher, "error"))["code"] == "bad_request", bad


async def test_members_of_a_dead_replica_leave_after_the_ttl(replicas):
    one = await replicas.start(create_app, "chat", node_id="one", presence_ttl_seconds=0.6)
    two = await replicas.start(create_app, "chat", node_id="two", presence_ttl_seconds=0.6)
    alice = await connect(one, "chat", "alice")
    await join(alice, "lobby")
    await receive_op(alice, "join")
    bob = await connect(two, "chat", "bob")
    await join(bob, "lobby")
    assert (await receive_op(alice, "join"))["user"] == "bob"
    # replica two stops refreshing, as if it died
    two.app[CONTEXT].state.abandon_entries()
    assert await receive_op(alice, "leave", timeout=5) == {
        "op": "leave",
        "ch": "lobby",
        "user": "bob",
    }


async def test_members_needs_a_subscription_and_membership_channels_are_private(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat")
    await ws.send_json({"op": "members", "id": 1, "ch": "lobby"})
    assert (await receive_op(ws, "error"))["code"] == "forbidden"
    await ws.send_json({"op": "sub", "id": 2, "ch": "#members:lobby"})
    assert (await receive_op(ws, "error"))["code"] == "bad_request"


async def test_a_client_that_stops_reading_is_closed_4108_and_others_keep_up(replicas):
    bound = 64 * 1024
    client = await replicas.start(create_app, "chat", outbound_queue_bytes=bound)
    ctx = client.app[__import__("services.kit.app", fromlist=["CONTEXT"]).CONTEXT]
    slow = await connect(client, "chat", "slow")
    await join(slow, "lobby")
    fast = await connect(client, "chat", "fast")
    await join(fast, "lobby")
    text = "x" * 1900
    sent = 0
    while not slow.closed and sent < 20000:  # ~40 MB at most; the bound is 64 KiB
        for _ in range(50):
            sent += 1
            await ctx.hub.publish("lobby", orjson.dumps({"text": text, "n": sent}))
            await asyncio.sleep(0)  # let the writers run, as a network round trip would
        got = await collect_msgs(fast, 50)
        assert [m["data"]["n"] for m in got] == list(range(sent - 49, sent + 1))
        if slow_consumer_disconnects(ctx) >= 1:
            break
    assert slow_consumer_disconnects(ctx) == 1
    # the replica never held more than the bound for the slow client
    assert ctx.replica.peak_outbound_bytes() <= bound
    code = await receive_close(slow, 30)
    assert code == 4108


def slow_consumer_disconnects(ctx: Any) -> float:
    """The replica's 4108 count, as /metrics shows it."""
    value = ctx.metrics.registry.get_sample_value(
        "wwws_slow_consumer_disconnects_total", {"service": ctx.spec.name}
    )
    return value or 0.0
