"""Refused handshakes answer 401/403 and upgrade nothing."""

from __future__ import annotations

import time

import aiohttp
import pytest
from helpers import SECRET, receive_op
from replicas import connect, token

from services.chat.app import create_app
from services.kit import CONTEXT, mint_token


async def test_valid_token_gets_hello(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await client.ws_connect("/chat/ws", params={"token": token("alice")})
    hello = await receive_op(ws, "hello")
    expires_at = hello.pop("exp")  # the token's exp: the helper's tokens live an hour
    assert 3500 < expires_at - time.time() <= 3600
    assert hello == {
        "op": "hello",
        "node": "test-node",
        "user": "alice",
        "heartbeat": 25.0,
        "service": "chat",
        "protocol": 1,
    }
    await ws.close()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"token": "not-a-jwt"},
        {"token": mint_token("alice", "another-secret-0123456789-0123456789ab")},
        {"token": mint_token("alice", SECRET, ttl_seconds=-10)},
    ],
    ids=["missing", "garbage", "wrong-secret", "expired"],
)
async def test_bad_token_is_401_without_upgrade(replicas, params):
    client = await replicas.start(create_app, "chat")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/chat/ws", params=params)
    assert refused.value.status == 401


async def test_foreign_origin_is_403(replicas):
    client = await replicas.start(create_app, "chat")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(
            "/chat/ws", params={"token": token("alice")}, origin="https://evil.example"
        )
    assert refused.value.status == 403


async def test_own_origin_is_allowed(replicas):
    client = await replicas.start(create_app, "chat")
    ws = await connect(client, "chat", origin="https://localhost")
    await ws.close()


async def test_refusals_are_counted(replicas):
    client = await replicas.start(create_app, "chat")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/chat/ws")
    ctx = client.app[CONTEXT]
    refused = {"service": "chat", "status": "401"}
    assert ctx.metrics.registry.get_sample_value("wwws_handshakes_refused_total", refused) == 1
