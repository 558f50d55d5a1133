"""Telephony calls in-process across two replicas, on memory and real Redis."""

from __future__ import annotations

import aiohttp
from helpers import receive_json, receive_op
from replicas import connect

from services.telephony.app import create_app


async def next_frame(ws: aiohttp.ClientWebSocketResponse, op: str) -> dict:
    """The next frame with ``op``, skipping presence chatter."""
    while True:
        frame = await receive_json(ws)
        if frame["op"] == op:
            return frame
        assert frame["op"] in ("presence", "presence_state"), frame


async def nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    try:
        frame = await receive_json(ws, timeout=0.3)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected {frame}")


async def test_call_answer_signal_hangup_across_replicas(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one")
    two = await replicas.start(create_app, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob_phone = await connect(two, "telephony", "bob")
    bob_laptop = await connect(one, "telephony", "bob")
    await alice.send_json({"op": "call", "id": 4, "to": "bob"})
    ringing = await next_frame(alice, "ringing")
    call_id = ringing["call_id"]
    assert ringing["id"] == 4
    for device in (bob_phone, bob_laptop):
        incoming = await next_frame(device, "incoming")
        assert incoming == {"op": "incoming", "call_id": call_id, "from": "alice"}
    await bob_phone.send_json({"op": "answer", "call_id": call_id})
    assert await next_frame(alice, "answered") == {"op": "answered", "call_id": call_id}
    assert (await next_frame(bob_laptop, "answered"))["elsewhere"] is True
    offer = {"type": "offer", "sdp": "v=0"}
    await alice.send_json({"op": "signal", "call_id": call_id, "data": offer})
    relayed = await next_frame(bob_phone, "signal")
    assert relayed == {"op": "signal", "call_id": call_id, "from": "alice", "data": offer}
    await bob_phone.send_json({"op": "signal", "call_id": call_id, "data": {"type": "answer"}})
    assert (await next_frame(alice, "signal"))["from"] == "bob"
    await nothing_more(bob_laptop)  # the other device is out of the call
    await bob_laptop.send_json({"op": "signal", "id": 9, "call_id": call_id, "data": {}})
    assert (await next_frame(bob_laptop, "error"))["code"] == "forbidden"
    # ...but any of bob's devices may end bob's call (the one holding it may be gone)
    await bob_laptop.send_json({"op": "hangup", "call_id": call_id})
    ended = await next_frame(alice, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "hangup"}
    assert await next_frame(bob_phone, "ended") == {**ended, "elsewhere": True}


async def test_offline_busy_reject_and_cancel(replicas):
    server = await replicas.start(create_app, "telephony")
    alice = await connect(server, "telephony", "alice")
    await alice.send_json({"op": "call", "id": 1, "to": "bob"})
    assert await next_frame(alice, "offline") == {"op": "offline", "id": 1}
    bob = await connect(server, "telephony", "bob")
    carol = await connect(server, "telephony", "carol")
    await alice.send_json({"op": "call", "id": 2, "to": "bob"})
    call_id = (await next_frame(alice, "ringing"))["call_id"]
    await next_frame(bob, "incoming")
    await carol.send_json({"op": "call", "id": 3, "to": "bob"})
    assert await next_frame(carol, "busy") == {"op": "busy", "id": 3}
    await bob.send_json({"op": "reject", "call_id": call_id})
    assert await next_frame(alice, "rejected") == {"op": "rejected", "call_id": call_id}
    # bob is free again; carol calls and cancels before bob answers
    await carol.send_json({"op": "call", "id": 4, "to": "bob"})
    second = (await next_frame(carol, "ringing"))["call_id"]
    await next_frame(bob, "incoming")
    await carol.send_json({"op": "hangup", "call_id": second})
    assert (await next_frame(bob, "ended"))["reason"] == "cancelled"
    await bob.send_json({"op": "answer", "id": 5, "call_id": second})
    assert (await next_frame(bob, "error"))["code"] == "not_found"


async def test_unanswered_call_is_missed(replicas):
    server = await replicas.start(create_app, "telephony", ring_timeout_seconds=0.3)
    alice = await connect(server, "telephony", "alice")
    bob = await connect(server, "telephony", "bob")
    await alice.send_json({"op": "call", "id": 1, "to": "bob"})
    call_id = (await next_frame(alice, "ringing"))["call_id"]
    await next_frame(bob, "incoming")
    assert await next_frame(alice, "missed") == {"op": "missed", "call_id": call_id}
    assert await next_frame(bob, "missed") == {"op": "missed", "call_id": call_id}
    await alice.send_json({"op": "call", "id": 2, "to": "bob"})  # nobody is busy any more
    await next_frame(alice, "ringing")


async def test_a_party_that_disconnects_ends_the_call(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one")
    two = await replicas.start(create_app, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob = await connect(two, "telephony", "bob")
    await alice.send_json({"op": "call", "id": 1, "to": "bob"})
    call_id = (await next_frame(alice, "ringing"))["call_id"]
    await next_frame(bob, "incoming")
    await bob.send_json({"op": "answer", "call_id": call_id})
    await next_frame(alice, "answered")
    await alice.close()
    ended = await next_frame(bob, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "disconnected"}


async def test_bad_call_frames(replicas):
    server = await replicas.start(create_app, "telephony")
    alice = await connect(server, "telephony", "alice")
    bob = await connect(server, "telephony", "bob")
    await alice.send_json({"op": "call", "id": 1, "to": "alice"})
    assert (await receive_op(alice, "error"))["code"] == "bad_request"
    await alice.send_json({"op": "answer", "id": 2, "call_id": "nope"})
    assert (await receive_op(alice, "error"))["code"] == "not_found"
    await alice.send_json({"op": "call", "id": 3, "to": "bob"})
    call_id = (await next_frame(alice, "ringing"))["call_id"]
    await next_frame(bob, "incoming")
    await alice.send_json({"op": "answer", "id": 4, "call_id": call_id})  # not the callee
    assert (await next_frame(alice, "error"))["code"] == "not_found"
    await alice.send_json({"op": "signal", "id": 5, "call_id": call_id, "data": {}})
    assert (await next_frame(alice, "error"))["code"] == "not_found"  # not active yet
    await bob.send_json({"op": "signal", "id": 6, "call_id": call_id, "data": "x"})
    assert (await next_frame(bob, "error"))["code"] == "bad_request"
