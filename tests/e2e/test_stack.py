"""The whole stack through Traefik over wss://, TLS verified against the local CA."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from helpers import collect_msgs, eventually, receive_close, receive_op
from stack import Stack


async def test_http_redirects_to_https(stack: Stack):
    async with aiohttp.ClientSession() as session:
        url = f"http://localhost:{stack.http_port}/chat/?x=1"
        async with session.get(url, allow_redirects=False) as response:
            assert response.status in (301, 308)
            assert response.headers["Location"] == f"{stack.base}/chat/?x=1"


@pytest.mark.parametrize("path", ["/", "/chat/", "/ticker/", "/telephony/"])
async def test_pages_are_served_over_verified_tls(stack: Stack, path: str):
    async with stack.session() as session, session.get(stack.base + path) as response:
        assert response.status == 200
        assert "text/html" in response.headers["Content-Type"]


async def test_landing_page_is_the_kits_served_by_every_service(stack: Stack):
    """`/` is not chat's: Traefik's `landing` service spans every service's replicas, and
    each one answers it with the same page."""
    async with stack.session() as session:
        async with session.get(stack.base + "/") as response:
            through_traefik = await response.text()
        for service in ("chat", "ticker", "telephony"):
            ip = stack.container_ip(stack.containers(service)[0])
            async with session.get(f"http://{ip}:8000/") as response:
                assert response.status == 200, service
                assert await response.text() == through_traefik, service


async def test_internal_endpoints_are_not_routed(stack: Stack):
    async with stack.session() as session:
        for path in ("/metrics", "/readyz", "/healthz", "/chat/metrics"):
            async with session.get(stack.base + path) as response:
                assert response.status == 404, path


async def test_handshake_refusals_through_traefik(stack: Stack):
    async with stack.session() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_token:
            await session.ws_connect(f"{stack.wss}/chat/ws")
        assert no_token.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as bad_origin:
            await session.ws_connect(
                f"{stack.wss}/chat/ws",
                params={"token": stack.token("alice")},
                origin="https://evil.example",
            )
        assert bad_origin.value.status == 403
        ws, _ = await stack.connect(session, "chat", "alice", origin=stack.base)
        await ws.close()


async def _clients_on_distinct_replicas(
    stack: Stack, session: aiohttp.ClientSession, wanted: int
) -> dict[str, aiohttp.ClientWebSocketResponse]:
    """Open connections until ``wanted`` replicas each hold one; close the spares."""
    by_node: dict[str, aiohttp.ClientWebSocketResponse] = {}
    spares = []
    for attempt in range(40):
        ws, hello = await stack.connect(session, "chat", f"user{attempt}")
        if hello["node"] in by_node:
            spares.append(ws)
        else:
            by_node[hello["node"]] = ws
        if len(by_node) == wanted:
            break
    for ws in spares:
        await ws.close()
    assert len(by_node) == wanted, f"connections reached only {sorted(by_node)}"
    return by_node


async def test_chat_across_replicas(stack: Stack):
    async with stack.session() as session:
        clients = await _clients_on_distinct_replicas(stack, session, 2)
        first, second = clients.values()
        for i, ws in enumerate((first, second)):
            await ws.send_json({"op": "sub", "id": i, "ch": "e2e-lobby"})
            await receive_op(ws, "subscribed")
        await first.send_json({"op": "pub", "id": 1, "ch": "e2e-lobby", "data": {"text": "ping"}})
        await second.send_json({"op": "pub", "id": 2, "ch": "e2e-lobby", "data": {"text": "pong"}})
        got_first = await collect_msgs(first, 2)
        got_second = await collect_msgs(second, 2)
        texts = [m["data"]["text"] for m in got_first]
        assert sorted(texts) == ["ping", "pong"]
        # Same order on both replicas.
        assert [m["offset"] for m in got_first] == [m["offset"] for m in got_second]
        assert texts == [m["data"]["text"] for m in got_second]
        for ws in clients.values():
            await ws.close()


async def test_resume_with_since_gets_exactly_the_missed(stack: Stack):
    room = "e2e-resume"
    async with stack.session() as session:
        poster, _ = await stack.connect(session, "chat", "poster")
        await poster.send_json({"op": "sub", "id": 1, "ch": room})
        await receive_op(poster, "subscribed")
        reader, _ = await stack.connect(session, "chat", "reader")
        await reader.send_json({"op": "sub", "id": 1, "ch": room})
        joined = await receive_op(reader, "subscribed")
        for i in range(3):
            await poster.send_json({"op": "pub", "id": i, "ch": room, "data": {"text": f"a{i}"}})
            await receive_op(poster, "ack")
        seen = await collect_msgs(reader, 3)
        await reader.close()
        missed = []
        for i in range(3, 8):
            await poster.send_json({"op": "pub", "id": i, "ch": room, "data": {"text": f"a{i}"}})
            missed.append((await receive_op(poster, "ack"))["offset"])
        reader, _ = await stack.connect(session, "chat", "reader")
        since = {"epoch": joined["epoch"], "offset": seen[-1]["offset"]}
        await reader.send_json({"op": "sub", "id": 2, "ch": room, "since": since})
        resumed = await receive_op(reader, "subscribed")
        assert resumed["recovered"] is True
        assert [p["offset"] for p in resumed["publications"]] == missed
        assert [p["data"]["text"] for p in resumed["publications"]] == [
            f"a{i}" for i in range(3, 8)
        ]
        # and nothing twice afterwards: the next live message follows directly
        await poster.send_json({"op": "pub", "id": 9, "ch": room, "data": {"text": "next"}})
        [live] = await collect_msgs(reader, 1)
        assert live["offset"] == missed[-1] + 1
        await reader.close()
        await poster.close()


async def test_ticker_snapshot_then_live_prices(stack: Stack):
    async with stack.session() as session:
        ws, _ = await stack.connect(session, "ticker", "trader")
        personal = await receive_op(ws, "subscribed")
        assert personal["ch"] == "user:trader"
        await asyncio.sleep(0.5)  # the feed publishes every 0.2 s
        await ws.send_json({"op": "sub", "id": 1, "ch": "AAPL"})
        snapshot = await receive_op(ws, "subscribed")
        [latest] = snapshot["publications"]
        assert latest["data"]["symbol"] == "AAPL" and latest["data"]["price"] > 0
        live = await collect_msgs(ws, 3)
        assert [m["offset"] for m in live] == [snapshot["offset"] + i for i in (1, 2, 3)]
        await ws.close()


async def test_ticker_notification_api(stack: Stack):
    async with stack.session() as session:
        ws, _ = await stack.connect(session, "ticker", "notified")
        await receive_op(ws, "subscribed")
        async with session.post(
            f"{stack.base}/ticker/api/publish",
            json={"user": "notified", "data": {"text": "order filled"}},
            headers={"Authorization": f"Bearer {stack.api_key}"},
        ) as response:
            assert response.status == 200
        [note] = await collect_msgs(ws, 1)
        assert note["ch"] == "user:notified" and note["data"]["text"] == "order filled"
        await ws.close()


async def test_telephony_presence(stack: Stack):
    async with stack.session() as session:
        alice, _ = await stack.connect(session, "telephony", "alice")
        await alice.send_json({"op": "watch", "id": 1, "users": ["bob"]})
        state = await receive_op(alice, "presence_state")
        assert state["users"] == {"bob": "offline"}
        bob, _ = await stack.connect(session, "telephony", "bob")
        assert await receive_op(alice, "presence") == {
            "op": "presence",
            "user": "bob",
            "status": "online",
        }
        await bob.close()
        assert (await receive_op(alice, "presence"))["status"] == "offline"
        await alice.close()


async def test_bad_input_through_traefik(stack: Stack):
    async with stack.session() as session:
        bystander, _ = await stack.connect(session, "chat", "bystander")
        await bystander.send_json({"op": "sub", "id": 1, "ch": "e2e-bad"})
        await receive_op(bystander, "subscribed")
        ws, _ = await stack.connect(session, "chat", "mallory")
        await ws.send_str("{oops")
        assert (await receive_op(ws, "error"))["code"] == "bad_request"
        await ws.send_str('{"op":"teleport"}')
        assert "unknown op" in (await receive_op(ws, "error"))["message"]
        await ws.send_bytes(b"\x00binary")
        assert await receive_close(ws) == 1003
        big, _ = await stack.connect(session, "chat", "mallory")
        await big.send_str("x" * 70_000)
        assert await receive_close(big) == 1009
        utf8, _ = await stack.connect(session, "chat", "mallory")
        await utf8._writer.send_frame(b'{"op":"\xff"}', aiohttp.WSMsgType.TEXT)
        assert await receive_close(utf8) == 1007
        poster, _ = await stack.connect(session, "chat", "poster")
        await poster.send_json({"op": "sub", "id": 1, "ch": "e2e-bad"})
        await receive_op(poster, "subscribed")
        await poster.send_json({"op": "pub", "id": 2, "ch": "e2e-bad", "data": {"text": "ok"}})
        [msg] = await collect_msgs(bystander, 1)
        assert msg["data"]["text"] == "ok"
        await bystander.close()
        await poster.close()


async def test_prometheus_scrapes_every_replica(stack: Stack):
    expected = {
        "chat": stack.chat_replicas,
        "ticker": stack.ticker_replicas,
        "ticker-feed": 1,
        "telephony": stack.telephony_replicas,
        "admin": 1,
    }
    url = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/targets?state=active"
    up: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(60):
            async with session.get(url) as response:
                targets = (await response.json())["data"]["activeTargets"]
            up = {}
            for target in targets:
                if target["health"] == "up":
                    job = target["labels"]["job"]
                    up[job] = up.get(job, 0) + 1
            if all(up.get(job) == n for job, n in expected.items()) and up.get("traefik") == 1:
                break
            await asyncio.sleep(1)
    assert {job: up.get(job) for job in expected} == expected
    assert up.get("traefik") == 1
    # one target per replica, never through Traefik: instances are the containers
    names = {c.name for c in stack.containers("chat")}
    assert len(names) == stack.chat_replicas


async def test_telephony_call_through_traefik(stack: Stack):
    async with stack.session() as session:
        alice, _ = await stack.connect(session, "telephony", "caller")
        bob, _ = await stack.connect(session, "telephony", "callee")
        await alice.send_json({"op": "call", "id": 1, "to": "callee"})
        call_id = (await receive_op(alice, "ringing"))["call_id"]
        assert (await receive_op(bob, "incoming"))["from"] == "caller"
        await bob.send_json({"op": "answer", "call_id": call_id})
        await receive_op(alice, "answered")
        await alice.send_json({"op": "signal", "call_id": call_id, "data": {"sdp": "x"}})
        assert (await receive_op(bob, "signal"))["data"] == {"sdp": "x"}
        await bob.send_json({"op": "hangup", "call_id": call_id})
        assert (await receive_op(alice, "ended"))["reason"] == "hangup"
        await alice.close()
        await bob.close()


async def test_access_log_keeps_handshake_tokens_out(stack: Stack):
    # The token travels in the handshake's query string; the access log drops the path.
    async with stack.session() as session:
        ws, _ = await stack.connect(session, "chat", "logged")
        await ws.close()
    token = stack.token("logged")
    traefik = stack.containers("traefik")[0]

    def handshake_logged() -> list[dict[str, object]]:
        lines = traefik.logs(tail=400).decode(errors="replace").splitlines()
        records = [orjson.loads(line) for line in lines if line.startswith("{")]
        # Traefik logs a hijacked (upgraded) connection with status 0 when it ends
        return [r for r in records if r.get("DownstreamStatus") in (0, 101)]

    records = await eventually(handshake_logged, what="an access log line for the handshake")
    assert all("RequestPath" not in record for record in records)
    assert token not in traefik.logs().decode(errors="replace")
