"""Telephony presence in-process: watch, online/offline events, across replicas, TTL."""

from __future__ import annotations

import asyncio
import functools
import time

from helpers import receive_json, receive_op
from replicas import connect

from services.kit import CONTEXT
from services.telephony.app import create_app
from services.telephony.limits import TelephonyLimits


async def test_watch_reports_state_then_changes(replicas):
    client = await replicas.start(create_app, "telephony")
    alice = await connect(client, "telephony", "alice")
    await alice.send_json({"op": "watch", "id": 3, "users": ["bob", "carol"]})
    state = await receive_op(alice, "presence_state")
    assert state == {
        "op": "presence_state",
        "id": 3,
        "users": {"bob": "offline", "carol": "offline"},
    }
    bob = await connect(client, "telephony", "bob")
    assert await receive_op(alice, "presence") == {
        "op": "presence",
        "user": "bob",
        "status": "online",
    }
    await bob.close()
    assert (await receive_op(alice, "presence"))["status"] == "offline"


async def test_presence_across_replicas_and_several_connections(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one")
    two = await replicas.start(create_app, "telephony", node_id="two")
    alice = await connect(one, "telephony", "alice")
    await alice.send_json({"op": "watch", "id": 1, "users": ["bob"]})
    await receive_op(alice, "presence_state")
    bob_phone = await connect(two, "telephony", "bob")
    assert (await receive_op(alice, "presence"))["status"] == "online"
    bob_laptop = await connect(one, "telephony", "bob")
    await bob_phone.close()  # still online on the laptop: no event
    await bob_laptop.close()
    event = await receive_op(alice, "presence")
    assert event == {"op": "presence", "user": "bob", "status": "offline"}


async def test_dead_replica_users_expire(replicas):
    one = await replicas.start(create_app, "telephony", node_id="one", presence_ttl_seconds=0.6)
    two = await replicas.start(create_app, "telephony", node_id="two", presence_ttl_seconds=0.6)
    alice = await connect(one, "telephony", "alice")
    await alice.send_json({"op": "watch", "id": 1, "users": ["bob"]})
    await receive_op(alice, "presence_state")
    await connect(two, "telephony", "bob")
    assert (await receive_op(alice, "presence"))["status"] == "online"
    # Replica two dies without cleaning up: stop its refresh loop, then wait for expiry.
    two.app[CONTEXT].state.roster.abandon_entries()
    event = await asyncio.wait_for(receive_op(alice, "presence", timeout=5), 5)
    assert event["status"] == "offline"


async def test_a_dead_replicas_users_go_offline_before_their_ttl(replicas):
    """The presence TTL is long here (60 s): bob's replica stops marking itself alive
    (as a dead one would) and the other replica removes its entries once the mark expires
    (liveness 0.6 s), without waiting for the TTL."""
    settings = {"presence_ttl_seconds": 60.0, "replica_liveness_seconds": 0.6}
    one = await replicas.start(create_app, "telephony", node_id="one", **settings)
    two = await replicas.start(create_app, "telephony", node_id="two", **settings)
    alice = await connect(one, "telephony", "alice")
    await alice.send_json({"op": "watch", "id": 1, "users": ["bob", "carol"]})
    await receive_op(alice, "presence_state")
    await connect(two, "telephony", "bob")
    await connect(one, "telephony", "carol")
    online = {(await receive_op(alice, "presence"))["user"] for _ in range(2)}
    assert online == {"bob", "carol"}
    started = time.monotonic()
    two.app[CONTEXT].state.roster.abandon_entries()
    event = await receive_op(alice, "presence", timeout=5)
    assert event == {"op": "presence", "user": "bob", "status": "offline"}
    assert time.monotonic() - started < 0.6 * 4 / 3 + 1.0  # not the 60 s TTL
    # carol, on the live replica, is untouched
    await alice.send_json({"op": "watch", "id": 2, "users": ["carol"]})
    assert (await receive_op(alice, "presence_state"))["users"] == {"carol": "online"}


async def test_bad_watch_frames(replicas):
    client = await replicas.start(create_app, "telephony")
    ws = await connect(client, "telephony", "alice")
    await ws.send_json({"op": "watch", "id": 1, "users": "bob"})
    assert (await receive_op(ws, "error"))["code"] == "bad_request"
    await ws.send_json({"op": "watch", "id": 2, "users": ["bad user"]})
    assert (await receive_op(ws, "error"))["code"] == "bad_request"
    await ws.send_json({"op": "sub", "id": 3, "ch": "presence"})
    assert (await receive_op(ws, "error"))["code"] == "not_found"


async def test_watching_is_capped_per_connection_in_total(replicas):
    limits = TelephonyLimits(max_watched_users=3)
    client = await replicas.start(functools.partial(create_app, limits=limits), "telephony")
    ws = await connect(client, "telephony", "alice")
    await ws.send_json({"op": "watch", "id": 1, "users": ["bob", "carol"]})
    await receive_op(ws, "presence_state")
    await ws.send_json({"op": "watch", "id": 2, "users": ["carol", "dave"]})  # carol: once
    assert (await receive_op(ws, "presence_state"))["users"] == {
        "carol": "offline",
        "dave": "offline",
    }
    await ws.send_json({"op": "watch", "id": 3, "users": ["erin"]})
    refused = await receive_op(ws, "error")
    assert refused["code"] == "too_large" and refused["id"] == 3
    assert "at most 3 users" in refused["message"]
    # refused as a whole: erin is not watched. A control connection that does watch her
    # hears her come online; ws, on the same replica, would have been told first.
    control = await connect(client, "telephony", "zed")
    await control.send_json({"op": "watch", "id": 1, "users": ["erin"]})
    await receive_op(control, "presence_state")
    await connect(client, "telephony", "erin")
    assert (await receive_op(control, "presence"))["status"] == "online"
    await ws.send_json({"op": "unwatch", "id": 4, "users": ["bob"]})
    assert (await receive_json(ws))["op"] == "unwatched"  # no presence frame for erin
    await ws.send_json({"op": "watch", "id": 5, "users": ["erin"]})
    assert (await receive_op(ws, "presence_state"))["users"] == {"erin": "online"}
    # a second connection has its own budget
    other = await connect(client, "telephony", "alice")
    await other.send_json({"op": "watch", "id": 6, "users": ["x1", "x2", "x3"]})
    assert (await receive_op(other, "presence_state"))["id"] == 6
