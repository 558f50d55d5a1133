"""Telephony calls in-process across two replicas, on memory and real Redis."""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from helpers import eventually, receive_json, receive_op
from replicas import connect

from services.kit.app import CONTEXT
from services.kit.protocol import ClientFrame, ProtocolError
from services.telephony.app import create_app
from services.telephony.limits import TelephonyLimits

# Leases short enough that a dead replica's party is stale within half a second.
FAST_LEASES = {"lease_seconds": 0.1}


def telephony(**limits: Any) -> Any:
    """create_app with these telephony limits (the others at their defaults)."""
    return functools.partial(create_app, limits=TelephonyLimits(**limits))


def kill_calls(server: TestClient) -> None:
    """The replica's call handling dies as under kill -9: it stops renewing its parties'
    leases and will never end their calls (its connections stay open, as if cut off)."""
    server.app[CONTEXT].state.desk.abandon()


async def place_call(caller: aiohttp.ClientWebSocketResponse, callee: str) -> str:
    await caller.send_json({"op": "call", "id": "c", "to": callee})
    return str((await next_frame(caller, "ringing"))["call_id"])


async def next_frame(ws: aiohttp.ClientWebSocketResponse, op: str) -> dict:
    """The next frame with ``op``, skipping presence chatter."""
    while True:
        frame = await receive_json(ws)
        if frame["op"] == op:
            return frame
        assert frame["op"] in ("presence", "presence_state"), frame


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
    # A signal from bob's other device takes the call over (a client that reconnected
    # carries its call on): the phone hears it moved, alice now talks to the laptop.
    await bob_laptop.send_json({"op": "signal", "id": 9, "call_id": call_id, "data": {"n": 1}})
    moved = await next_frame(bob_phone, "ended")
    assert moved == {"op": "ended", "call_id": call_id, "reason": "moved", "elsewhere": True}
    assert (await next_frame(alice, "signal"))["data"] == {"n": 1}
    await alice.send_json({"op": "signal", "call_id": call_id, "data": {"n": 2}})
    # the laptop's first signal: it heard none of the call while the phone had it
    assert (await next_frame(bob_laptop, "signal"))["data"] == {"n": 2}
    await bob_phone.close()  # the phone leaving on purpose does not end the moved call
    await alice.send_json({"op": "signal", "call_id": call_id, "data": {"n": 4}})
    assert (await next_frame(bob_laptop, "signal"))["data"] == {"n": 4}
    # Any of bob's devices may end bob's call (the one holding it may be gone).
    bob_tablet = await connect(two, "telephony", "bob")
    await bob_tablet.send_json({"op": "hangup", "call_id": call_id})
    ended = await next_frame(alice, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "hangup"}
    assert await next_frame(bob_laptop, "ended") == {**ended, "elsewhere": True}


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


async def answered_call(
    caller: aiohttp.ClientWebSocketResponse, callee: aiohttp.ClientWebSocketResponse, to: str
) -> str:
    call_id = await place_call(caller, to)
    await next_frame(callee, "incoming")
    await callee.send_json({"op": "answer", "call_id": call_id})
    await next_frame(caller, "answered")
    return call_id


async def alice_rings_bob_across_replicas(replicas: Any) -> tuple[Any, ...]:
    """Replicas one (alice) and two (bob) with short leases; alice's call rings for bob."""
    one = await replicas.start(telephony(**FAST_LEASES), "telephony", node_id="one")
    two = await replicas.start(telephony(**FAST_LEASES), "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob = await connect(two, "telephony", "bob")
    call_id = await place_call(alice, "bob")
    await next_frame(bob, "incoming")
    return one, two, alice, bob, call_id


async def test_a_party_whose_replica_dies_is_disconnected_within_the_lease(replicas):
    one, two, alice, bob, call_id = await alice_rings_bob_across_replicas(replicas)
    await bob.send_json({"op": "answer", "call_id": call_id})
    await next_frame(alice, "answered")
    kill_calls(two)
    ended = await next_frame(alice, "ended")  # stale after 0.4 s; receive waits up to 5 s
    assert ended == {"op": "ended", "call_id": call_id, "reason": "disconnected"}
    # both guards are released: bob, back on another replica, can be called again
    bob_again = await connect(one, "telephony", "bob")
    second = await place_call(alice, "bob")
    assert (await next_frame(bob_again, "incoming"))["call_id"] == second


async def test_a_ringing_call_whose_caller_replica_dies_ends_for_the_callee(replicas):
    one, two, _, bob, call_id = await alice_rings_bob_across_replicas(replicas)
    kill_calls(one)
    ended = await next_frame(bob, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "disconnected"}
    alice_again = await connect(two, "telephony", "alice")
    await place_call(bob, "alice")
    assert (await next_frame(alice_again, "incoming"))["from"] == "bob"


async def test_a_new_connection_ends_the_call_its_dead_replica_held(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one")  # default 2 s leases
    two = await replicas.start(create_app, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob = await connect(two, "telephony", "bob")
    call_id = await answered_call(alice, bob, "bob")
    kill_calls(two)
    # bob comes back on replica one before his lease lapses and hangs up from there
    bob_again = await connect(one, "telephony", "bob")
    await bob_again.send_json({"op": "hangup", "id": 1, "call_id": call_id})
    ended = await next_frame(alice, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "hangup"}
    await place_call(alice, "bob")  # both are free again
    assert (await next_frame(bob_again, "incoming"))["from"] == "alice"


async def test_a_new_connection_is_offered_the_ringing_call_and_may_answer(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one")
    two = await replicas.start(create_app, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob_phone = await connect(one, "telephony", "bob")
    call_id = await place_call(alice, "bob")
    await next_frame(bob_phone, "incoming")
    bob_laptop = await connect(two, "telephony", "bob")  # opened while it rings
    incoming = await next_frame(bob_laptop, "incoming")
    assert incoming == {"op": "incoming", "call_id": call_id, "from": "alice"}
    await bob_laptop.send_json({"op": "answer", "call_id": call_id})
    assert await next_frame(alice, "answered") == {"op": "answered", "call_id": call_id}
    assert (await next_frame(bob_phone, "answered"))["elsewhere"] is True
    await alice.send_json({"op": "hangup", "call_id": call_id})
    # the laptop's next call frame is the end: it was offered the call once, not twice
    ended = await next_frame(bob_laptop, "ended")
    assert ended == {"op": "ended", "call_id": call_id, "reason": "hangup"}


async def test_guards_of_a_call_nobody_renews_expire_within_a_few_leases(replicas):
    unlimited = {"calls_per_caller": 0, "calls_per_callee": 0}  # carol retries until through
    server = await replicas.start(telephony(**FAST_LEASES, **unlimited), "telephony")
    alice = await connect(server, "telephony", "alice")
    bob = await connect(server, "telephony", "bob")
    await answered_call(alice, bob, "bob")
    kill_calls(server)  # neither side is renewed any more, nobody ends the call

    async def carol_gets_through() -> bool:
        await carol.send_json({"op": "call", "id": "try", "to": "bob"})
        reply = await next_frame_of(carol, {"ringing", "busy"})
        return reply["op"] == "ringing"

    carol = await connect(server, "telephony", "carol")
    await eventually(carol_gets_through, timeout=5, interval=0.2, what="bob's guard expired")


async def next_frame_of(ws: aiohttp.ClientWebSocketResponse, ops: set[str]) -> dict[str, Any]:
    while True:
        frame = await receive_json(ws)
        if frame["op"] in ops:
            return dict(frame)
        assert frame["op"] in ("presence", "presence_state", "incoming", "ended"), frame


async def test_calls_are_rate_limited_per_caller_and_per_callee(replicas):
    limits = telephony(calls_per_caller=3, calls_per_callee=1)
    one = await replicas.start(limits, "telephony", node_id="one")
    two = await replicas.start(limits, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    await connect(two, "telephony", "bob")
    await connect(two, "telephony", "carol")
    first = await place_call(alice, "bob")
    await alice.send_json({"op": "hangup", "call_id": first})  # cancel, then recall at once
    await alice.send_json({"op": "call", "id": 2, "to": "bob"})
    refused = await next_frame(alice, "error")
    assert refused["code"] == "rate_limited" and refused["id"] == 2
    assert refused["message"] == "at most 1 calls to the same user per 600 s"
    second = await place_call(alice, "carol")  # another callee is fine
    await alice.send_json({"op": "hangup", "call_id": second})
    # the caller's limit spans all of alice's connections, on every replica
    alice_other = await connect(two, "telephony", "alice")
    await alice_other.send_json({"op": "call", "id": 4, "to": "dave"})
    refused = await next_frame(alice_other, "error")
    assert refused["code"] == "rate_limited"
    assert refused["message"] == "at most 3 calls per 60 s"


async def test_a_blocked_caller_hears_offline(replicas):
    server = await replicas.start(telephony(max_blocked_users=2), "telephony")
    alice = await connect(server, "telephony", "alice")
    bob = await connect(server, "telephony", "bob")
    carol = await connect(server, "telephony", "carol")
    await bob.send_json({"op": "block", "id": 1, "user": "alice"})
    assert await next_frame(bob, "blocked") == {"op": "blocked", "id": 1, "users": ["alice"]}
    await alice.send_json({"op": "call", "id": 2, "to": "bob"})
    assert await next_frame(alice, "offline") == {"op": "offline", "id": 2}
    call_id = await place_call(carol, "bob")  # others still get through
    # ...and carol's is the first call to ring for bob: alice's never did
    assert (await next_frame(bob, "incoming"))["call_id"] == call_id
    await carol.send_json({"op": "hangup", "call_id": call_id})
    await next_frame(bob, "ended")
    # the list is bounded, and unblocking lets the caller through again
    await bob.send_json({"op": "block", "id": 3, "user": "dave"})
    assert (await next_frame(bob, "blocked"))["users"] == ["alice", "dave"]
    await bob.send_json({"op": "block", "id": 4, "user": "erin"})
    assert (await next_frame(bob, "error"))["code"] == "too_large"
    await bob.send_json({"op": "unblock", "id": 5, "user": "alice"})
    assert (await next_frame(bob, "blocked"))["users"] == ["dave"]
    await place_call(alice, "bob")


async def test_bad_block_frames(replicas):
    server = await replicas.start(create_app, "telephony")
    bob = await connect(server, "telephony", "bob")
    await bob.send_json({"op": "block", "id": 1, "user": "bad user"})
    assert (await next_frame(bob, "error"))["code"] == "bad_request"
    await bob.send_json({"op": "block", "id": 2})
    assert (await next_frame(bob, "error"))["code"] == "bad_request"
    await bob.send_json({"op": "unblock", "id": 3, "user": "nobody"})  # not blocked: no-op
    assert await next_frame(bob, "blocked") == {"op": "blocked", "id": 3, "users": []}


async def signal_until_heard(
    caller: aiohttp.ClientWebSocketResponse, callee: aiohttp.ClientWebSocketResponse, call_id: str
) -> None:
    """The caller signals until the callee's connection relays one (each try: 0.3 s)."""
    for seq in range(20):
        await caller.send_json({"op": "signal", "call_id": call_id, "data": {"seq": seq}})
        try:
            while True:
                frame = await receive_json(callee, timeout=0.3)
                if frame["op"] == "signal":
                    assert frame["data"] == {"seq": seq} or frame["data"]["seq"] < seq
                    return
                assert frame["op"] in ("presence", "presence_state"), frame
        except TimeoutError:
            continue
    raise AssertionError("no signal reached the callee's new connection")


async def still_talking(
    alice: aiohttp.ClientWebSocketResponse, bob: aiohttp.ClientWebSocketResponse, call_id: str
) -> None:
    """Bob's signal is the next thing alice hears: no `ended` came before it."""
    await bob.send_json({"op": "signal", "call_id": call_id, "data": {"still": "here"}})
    frame = await receive_json(alice)
    while frame["op"] in ("presence", "presence_state") or (
        frame["op"] == "signal" and frame["data"] != {"still": "here"}
    ):
        frame = await receive_json(alice)
    assert frame == {"op": "signal", "call_id": call_id, "from": "bob", "data": {"still": "here"}}


async def alice_and_bob_talking_across_replicas(replicas: Any) -> tuple[Any, ...]:
    """Replicas one (alice) and two (bob) with short leases, and their answered call:
    one, two, alice, bob and the call's id."""
    one = await replicas.start(telephony(lease_seconds=0.25), "telephony", node_id="one")
    two = await replicas.start(telephony(lease_seconds=0.25), "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    bob = await connect(two, "telephony", "bob")
    return one, two, alice, bob, await answered_call(alice, bob, "bob")


async def bob_moves_after_the_server_closed(
    replicas: Any, code: int, reason: str
) -> tuple[Any, Any, str, tuple[Any, Any]]:
    """Alice (replica one) and bob (replica two) in a call; replica two closes bob's socket
    with ``code``; bob comes back on replica one and hears alice. Returns alice, bob's new
    connection, the call and (replica two, bob's closed server-side connection)."""
    one, two, alice, _, call_id = await alice_and_bob_talking_across_replicas(replicas)
    (held,) = two.app[CONTEXT].replica.connections
    held.close(code, reason)
    bob_again = await connect(one, "telephony", "bob")
    await signal_until_heard(alice, bob_again, call_id)
    return alice, bob_again, call_id, (two, held)


async def test_a_call_follows_its_party_whose_connection_the_server_dropped(replicas):
    """Bob's replica closes his socket (a drain, an outage): his client reconnects to another
    replica and the call is there, without bob sending anything; alice hears no end."""
    alice, bob_again, call_id, _ = await bob_moves_after_the_server_closed(
        replicas,
        1001,
        "going away",  # as the drain does
    )
    await asyncio.sleep(1.5)  # several stale_after periods: replica one renews bob's side
    await still_talking(alice, bob_again, call_id)


async def test_a_late_signal_from_a_closed_connection_takes_no_call_over(replicas):
    """A frame read just before the server closed the socket may be handled after the
    client came back on a new connection (its Redis work waited out an outage): it must
    not move the call back to the closed connection and tell the new one ``moved``."""
    alice, bob_again, call_id, (two, held) = await bob_moves_after_the_server_closed(
        replicas,
        1013,
        "backplane unavailable, reconnect",  # as an outage's sweep does
    )
    late = ClientFrame("signal", None, {"call_id": call_id, "data": {"late": True}})
    with pytest.raises(ProtocolError):
        await two.app[CONTEXT].state.desk.signal(held, late)
    await alice.send_json({"op": "signal", "call_id": call_id, "data": {"after": "late"}})
    # the next thing bob's new connection hears is alice's signal, not `ended`
    assert (await next_frame(bob_again, "signal"))["data"] == {"after": "late"}


async def test_a_late_signal_from_a_dropped_connection_takes_no_call_over(replicas):
    """Bob's first device drops off without a close frame while his replica's cleanup after
    it is held up (its Redis work slow): a frame it sent before, handled now, must not take
    the call back from the device bob talks on (which would hear ``ended``, and the call
    would follow a dead socket)."""
    one, two, alice, bob, call_id = await alice_and_bob_talking_across_replicas(replicas)
    (first,) = two.app[CONTEXT].replica.connections
    bob_again = await connect(one, "telephony", "bob")
    await bob_again.send_json({"op": "signal", "call_id": call_id, "data": {"from": "again"}})
    assert (await next_frame(alice, "signal"))["data"] == {"from": "again"}  # moved to it
    desk = two.app[CONTEXT].state.desk
    cleanup_started, go_on = asyncio.Event(), asyncio.Event()
    disconnected = desk.disconnected

    async def held_up(conn: Any) -> None:
        cleanup_started.set()
        await go_on.wait()
        await disconnected(conn)

    desk.disconnected = held_up
    bob.get_extra_info("socket").shutdown(socket.SHUT_RDWR)  # gone, no close frame
    await asyncio.wait_for(cleanup_started.wait(), timeout=5)
    late = ClientFrame("signal", None, {"call_id": call_id, "data": {"late": True}})
    try:
        with pytest.raises(ProtocolError):
            await desk.signal(first, late)
    finally:
        go_on.set()
    await alice.send_json({"op": "signal", "call_id": call_id, "data": {"after": "late"}})
    # the next thing bob's live device hears is alice's signal, not `ended`
    assert (await next_frame(bob_again, "signal"))["data"] == {"after": "late"}


async def test_a_call_follows_its_party_whose_replica_died(replicas):
    """Bob's replica stops tending calls (kill -9) while his socket stays open: his new
    connection takes the call over once the old lease misses a renewal, before the call
    would be ended, so alice talks on without hearing `ended`."""
    one, two, alice, bob, call_id = await alice_and_bob_talking_across_replicas(replicas)
    kill_calls(two)
    bob_again = await connect(one, "telephony", "bob")
    await signal_until_heard(alice, bob_again, call_id)
    await asyncio.sleep(1.5)
    await still_talking(alice, bob_again, call_id)
    # the old socket, if it still listens, had the signals sent before the move, then is told
    frame = await receive_json(bob)
    while frame["op"] in ("signal", "presence", "presence_state"):
        frame = await receive_json(bob)
    moved = frame
    assert moved == {"op": "ended", "call_id": call_id, "reason": "moved", "elsewhere": True}
