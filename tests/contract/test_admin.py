"""The admin console in-process, beside chat and telephony replicas on one backplane
(memory, and the same tests on a real Redis): who may open it, what it pushes, and the
operator's actions."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from helpers import collect_msgs, receive_json, receive_op
from replicas import Replicas, connect

from services.admin.app import LOGIN_FAILURES_PER_MINUTE
from services.admin.app import create_app as create_admin
from services.chat.app import create_app as create_chat
from services.telephony.app import create_app as create_telephony

ADMIN_KEY = "admin-key-for-the-contract-tests"
FAST = {"report_seconds": 0.1}


async def start_admin(replicas: Replicas, **overrides: Any) -> TestClient:
    return await replicas.start(
        create_admin, "admin", **{"api_key": ADMIN_KEY, **FAST, **overrides}
    )


async def admin_token(client: TestClient, key: str = ADMIN_KEY) -> str:
    response = await client.post("/admin/api/login", json={"key": key})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["user"] == "admin"
    return str(body["token"])


async def open_console(client: TestClient) -> aiohttp.ClientWebSocketResponse:
    token = await admin_token(client)
    ws = await client.ws_connect("/admin/ws", params={"token": token})
    await receive_op(ws, "hello")
    return ws


async def console_until(ws: aiohttp.ClientWebSocketResponse, check: Any) -> dict[str, Any]:
    """The first pushed ``console`` frame that satisfies ``check`` (frames come every
    report interval; replies to requests may interleave and are skipped)."""
    for _ in range(100):
        frame = await receive_json(ws, timeout=5.0)
        if frame["op"] == "console" and check(frame):
            return dict(frame)
    raise AssertionError("no console frame satisfied the check")


async def test_login_needs_the_admin_key_and_the_console_is_off_without_one(replicas):
    off = await replicas.start(create_admin, "admin", api_key=None)
    response = await off.post("/admin/api/login", json={"key": "anything"})
    assert response.status == 503
    assert "WWWS_ADMIN_API_KEY" in await response.text()

    admin = await start_admin(replicas)
    assert (await admin.post("/admin/api/login", json={"key": "wrong"})).status == 401
    assert (await admin.post("/admin/api/login", data=b"not json")).status == 400
    await admin_token(admin)


async def test_user_tokens_do_not_open_the_console_and_admin_tokens_open_nothing_else(replicas):
    admin = await start_admin(replicas)
    chat = await replicas.start(create_chat, "chat", **FAST)
    with pytest.raises(aiohttp.WSServerHandshakeError) as user_token:
        await connect(admin, "admin", "admin")  # a user token, even for a user "admin"
    assert user_token.value.status == 401
    token = await admin_token(admin)
    with pytest.raises(aiohttp.WSServerHandshakeError) as admin_elsewhere:
        await chat.ws_connect("/chat/ws", params={"token": token})
    assert admin_elsewhere.value.status == 401
    # no dev login on the console, whatever the settings say
    dev = await start_admin(replicas, dev_login=True)
    assert (await dev.post("/admin/api/dev-login", json={"user": "x"})).status in (404, 405)


async def test_failed_logins_are_limited(replicas):
    admin = await start_admin(replicas)
    for _ in range(LOGIN_FAILURES_PER_MINUTE):
        assert (await admin.post("/admin/api/login", json={"key": "guess"})).status == 401
    # past the limit even the right key waits: guessing cannot go on at full speed
    assert (await admin.post("/admin/api/login", json={"key": ADMIN_KEY})).status == 429


async def test_the_console_shows_every_replica_and_the_busiest_channels(replicas):
    admin = await start_admin(replicas)
    chat_a = await replicas.start(create_chat, "chat", node_id="chat-a", **FAST)
    chat_b = await replicas.start(create_chat, "chat", node_id="chat-b", **FAST)
    users = [await connect(chat_a, "chat", "ann"), await connect(chat_b, "chat", "ben")]
    users.append(await connect(chat_b, "chat", "cat"))
    for i, ws in enumerate(users):
        await ws.send_json({"op": "sub", "id": i, "ch": "lobby"})
        await receive_op(ws, "subscribed")
    await users[2].send_json({"op": "sub", "id": 9, "ch": "quiet"})
    await receive_op(users[2], "subscribed")
    console = await open_console(admin)

    def complete(frame: dict[str, Any]) -> bool:
        nodes = {r["node"]: r for r in frame["replicas"] if r["service"] == "chat"}
        return (
            nodes.get("chat-a", {}).get("connections") == 1
            and nodes.get("chat-b", {}).get("connections") == 2
        )

    frame = await console_until(console, complete)
    chat_b_row = next(r for r in frame["replicas"] if r["node"] == "chat-b")
    assert chat_b_row["subscriptions"] == 3
    assert chat_b_row["memory_bytes"] > 0 and chat_b_row["heartbeat_seconds"] > 0
    assert not chat_b_row["draining"] and not chat_b_row["silent"]
    assert chat_b_row["series"] and len(chat_b_row["series"][-1]) == 5
    assert frame["channels"][:2] == [
        {"service": "chat", "ch": "lobby", "subscribers": 3},
        {"service": "chat", "ch": "quiet", "subscribers": 1},
    ]
    # the admin replica reports itself too
    assert any(r["service"] == "admin" for r in frame["replicas"])

    # traffic shows as rates: chat-a's client publishes, chat-b sends each message twice
    for i in range(20):
        await users[0].send_json({"op": "pub", "id": 100 + i, "ch": "lobby", "data": {"text": "x"}})
    await collect_msgs(users[1], 20)
    await collect_msgs(users[2], 20)
    busy = await console_until(
        console,
        lambda f: any(r["node"] == "chat-b" and r["out_per_second"] > 0 for r in f["replicas"]),
    )
    assert any(r["node"] == "chat-a" and r["in_per_second"] >= 0 for r in busy["replicas"])
    for ws in (*users, console):
        await ws.close()


async def test_publish_reaches_a_room_as_admin_and_bad_requests_are_refused(replicas):
    admin = await start_admin(replicas)
    chat = await replicas.start(create_chat, "chat", **FAST)
    reader = await connect(chat, "chat", "ann")
    await reader.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(reader, "subscribed")
    console = await open_console(admin)
    await console.send_json(
        {"op": "publish", "id": 7, "service": "chat", "ch": "lobby", "data": {"text": "maint"}}
    )
    reply = await _reply(console, 7)
    assert reply["op"] == "published" and reply["offset"] >= 1
    [msg] = await collect_msgs(reader, 1)
    assert msg["data"]["text"] == "maint" and msg["data"]["user"] == "admin"
    assert msg["offset"] == reply["offset"]

    bad = [
        {"op": "publish", "id": 8, "service": "telephony", "ch": "x", "data": {}},
        {"op": "publish", "id": 9, "service": "chat", "ch": "#members:lobby", "data": {}},
        {"op": "publish", "id": 10, "service": "chat", "ch": "lobby", "data": "text"},
        {"op": "presence", "id": 11, "user": "no spaces allowed"},
    ]
    for frame in bad:
        await console.send_json(frame)
        error = await _reply(console, frame["id"])
        assert error["op"] == "error" and error["code"] == "bad_request", error
    await console.send_json({"op": "sub", "id": 12, "ch": "lobby"})
    error = await _reply(console, 12)
    assert error["code"] == "forbidden"
    await reader.close()
    await console.close()


async def test_presence_lookup_finds_a_user_in_telephony_and_chat_rooms(replicas):
    admin = await start_admin(replicas)
    chat = await replicas.start(create_chat, "chat", **FAST)
    telephony = await replicas.start(create_telephony, "telephony", **FAST)
    ann_chat = await connect(chat, "chat", "ann")
    await ann_chat.send_json({"op": "sub", "id": 1, "ch": "lobby"})
    await receive_op(ann_chat, "subscribed")
    ann_phone = await connect(telephony, "telephony", "ann")
    console = await open_console(admin)
    # the console learns the rooms from the reports
    await console_until(console, lambda f: any(c["ch"] == "lobby" for c in f["channels"]))
    await console.send_json({"op": "presence", "id": 1, "user": "ann"})
    found = await _reply(console, 1)
    assert found == {"op": "presence", "id": 1, "user": "ann", "online": True, "rooms": ["lobby"]}
    await console.send_json({"op": "presence", "id": 2, "user": "nobody"})
    assert (await _reply(console, 2))["online"] is False
    for ws in (ann_chat, ann_phone, console):
        await ws.close()


async def _reply(ws: aiohttp.ClientWebSocketResponse, request_id: int) -> dict[str, Any]:
    """The reply to request ``request_id``, skipping pushed console frames."""
    for _ in range(100):
        frame = await receive_json(ws, timeout=5.0)
        if frame.get("id") == request_id:
            return dict(frame)
    raise AssertionError(f"no reply to {request_id}")
