"""What the services get from the backplane, end to end in-process, on memory and Redis:
presence kept apart per service, client offsets validated, idempotent pub, repair after
the store lost its data, and no call signalling left in the store."""

from __future__ import annotations

import secrets

import pytest
from helpers import collect_msgs, eventually, receive_json, receive_op
from replicas import connect

from services.chat.app import create_app as create_chat
from services.telephony.app import create_app as create_telephony


async def sub(ws, room, **fields):
    await ws.send_json({"op": "sub", "id": "s", "ch": room, **fields})
    return await receive_op(ws, "subscribed")


async def watch(ws, *users):
    await ws.send_json({"op": "watch", "id": "w", "users": list(users)})
    return (await receive_op(ws, "presence_state"))["users"]


async def members(ws, room):
    await ws.send_json({"op": "members", "id": "m", "ch": room})
    return (await receive_op(ws, "members"))["users"]


async def test_presence_does_not_leak_between_services(replicas):
    chat = await replicas.start(create_chat, "chat")
    telephony = await replicas.start(create_telephony, "telephony")
    await connect(telephony, "telephony", "tom")  # online in telephony's group "online"
    mallory = await connect(chat, "chat", "mallory")
    await sub(mallory, "online")  # a chat room with the same name
    assert await members(mallory, "online") == ["mallory"]
    watcher = await connect(telephony, "telephony", "wendy")
    assert await watch(watcher, "mallory", "tom") == {"mallory": "offline", "tom": "online"}


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "history", "ch": "lobby", "before": -1},
        {"op": "history", "ch": "lobby", "before": 2**63},
        {"op": "sub", "ch": "lobby", "since": {"epoch": "x", "offset": 2**63}},
        {"op": "sub", "ch": "lobby", "since": {"epoch": "x", "offset": 2**53}},
    ],
)
async def test_out_of_range_offsets_are_bad_requests(replicas, frame):
    client = await replicas.start(create_chat, "chat")
    ws = await connect(client, "chat")
    await ws.send_json({**frame, "id": 5})
    error = await receive_op(ws, "error")
    assert (error["code"], error["id"]) == ("bad_request", 5)  # not `unavailable`
    await ws.send_json({"op": "history", "id": 6, "ch": "lobby", "before": 2**53 - 1})
    assert (await receive_op(ws, "history"))["publications"] == []


async def test_reading_an_unused_room_stores_nothing(replicas, backplane_factory):
    client = await replicas.start(create_chat, "chat")
    ws = await connect(client, "chat")
    await ws.send_json({"op": "history", "id": 1, "ch": "nobody-here"})
    page = await receive_op(ws, "history")
    assert (page["epoch"], page["top"], page["publications"]) == ("", 0, [])
    assert backplane_factory.stored() == []


async def test_a_retried_pub_with_the_same_idem_is_stored_once(replicas):
    one = await replicas.start(create_chat, "chat", node_id="one")
    two = await replicas.start(create_chat, "chat", node_id="two")
    alice, bob, reader = (
        await connect(one, "chat", "alice"),
        await connect(two, "chat", "bob"),
        await connect(two, "chat", "reader"),
    )
    for ws in (alice, bob, reader):
        await sub(ws, "lobby")

    async def pub(ws, text, **fields):
        await ws.send_json(
            {"op": "pub", "id": text, "ch": "lobby", "data": {"text": text}, **fields}
        )
        return (await receive_op(ws, "ack"))["offset"]

    assert await pub(alice, "first", idem="k-1") == 1
    assert await pub(alice, "first", idem="k-1") == 1  # a retry: the original offset
    assert await pub(bob, "bob's", idem="k-1") == 2  # keys are per user
    assert await pub(alice, "second") == 3
    got = await collect_msgs(reader, 3)
    assert [(m["offset"], m["data"]["text"]) for m in got] == [
        (1, "first"),
        (2, "bob's"),
        (3, "second"),
    ]
    for bad in ("", "x" * 65, 7):
        await alice.send_json(
            {"op": "pub", "id": 9, "ch": "lobby", "data": {"text": "t"}, "idem": bad}
        )
        assert (await receive_op(alice, "error"))["code"] == "bad_request"


async def test_presence_and_membership_come_back_after_the_store_loses_its_data(
    replicas, backplane_factory
):
    """Within one refresh period (a quarter of the TTL) every replica re-asserts its
    users, and watchers hear of those that had vanished."""
    ttl = {"presence_ttl_seconds": 0.8}
    phones = await replicas.start(create_telephony, "telephony", node_id="one", **ttl)
    watchers = await replicas.start(create_telephony, "telephony", node_id="two", **ttl)
    chat = await replicas.start(create_chat, "chat", node_id="three", **ttl)
    await connect(phones, "telephony", "bob")
    alice = await connect(chat, "chat", "alice")
    await sub(alice, "lobby")
    backplane_factory.flush()
    carol = await connect(watchers, "telephony", "carol")
    state = await watch(carol, "bob")
    if state["bob"] == "offline":  # asked before the refresh: told when it comes back
        event = await receive_op(carol, "presence")
        assert event == {"op": "presence", "user": "bob", "status": "online"}

    async def alice_is_member() -> bool:
        return await members(alice, "lobby") == ["alice"]

    await eventually(alice_is_member, timeout=5, what="alice is a member again")


async def test_call_signalling_leaves_nothing_in_the_store(replicas, backplane_factory):
    one = await replicas.start(create_telephony, "telephony", node_id="one")
    two = await replicas.start(create_telephony, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob = await connect(two, "telephony", "bob")
    await alice.send_json({"op": "call", "to": "bob"})
    call_id = (await receive_op(alice, "ringing"))["call_id"]
    await receive_op(bob, "incoming")
    await bob.send_json({"op": "answer", "call_id": call_id})
    await receive_op(alice, "answered")
    marker = secrets.token_hex(16)
    offer = {"type": "offer", "sdp": f"v=0 {marker} " + "a" * 8000}
    await alice.send_json({"op": "signal", "call_id": call_id, "data": offer})
    relayed = await receive_json(bob)
    assert relayed["op"] == "signal" and relayed["data"] == offer
    stored = backplane_factory.stored()
    assert not [name for name in stored if "#" in name]  # no internal channel has a stream
    assert not [value for value in backplane_factory.stored_values() if marker.encode() in value]
