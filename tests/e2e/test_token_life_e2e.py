"""Token life through Traefik on the real stack (real Redis): a client with short tokens
keeps its connection by refreshing over the socket; revoking a user through the admin
API closes their connections on every replica of every service with 4011 and refuses
their old token; one user cannot hold more than the per-replica cap of sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import aiohttp
import jwt
import pytest
from helpers import receive_close
from stack import Stack

from clients.wwws import Client


def short_token(stack: Stack, user: str, seconds: float) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(seconds)}, stack.secret)


async def test_short_tokens_are_refreshed_over_the_socket(stack: Stack):
    async def provider() -> str:
        return short_token(stack, "refresher", 3)

    url = f"{stack.wss}/chat/ws"
    async with Client(
        url, await provider(), ssl_context=stack.ssl_context(), token_provider=provider
    ) as client:
        await client.subscribe("e2e-refresh")
        await asyncio.sleep(6)  # two token lifetimes
        assert client.token_refreshes >= 2
        assert client.close_codes == [] and client.reconnects == 0
        assert await client.publish("e2e-refresh", {"text": "still connected"}) >= 1


async def test_revoking_a_user_closes_them_everywhere(stack: Stack):
    banned = stack.token("banned")
    async with stack.session() as session:
        sockets = []
        chat_nodes: set[str] = set()

        async def open_as_banned(service: str) -> str:
            ws = await session.ws_connect(f"{stack.wss}/{service}/ws", params={"token": banned})
            hello = await ws.receive_json(timeout=10)
            assert hello["op"] == "hello"
            sockets.append(ws)
            return str(hello["node"])

        # one through Traefik per service, and one on every chat replica directly (Traefik
        # may place sockets anywhere; the revocation must reach each replica)
        for service in ("chat", "ticker", "telephony"):
            await open_as_banned(service)
        for container in stack.containers("chat"):
            url = f"ws://{stack.container_ip(container)}:8000/chat/ws"
            ws = await session.ws_connect(url, params={"token": banned})
            hello = await ws.receive_json(timeout=10)
            chat_nodes.add(str(hello["node"]))
            sockets.append(ws)
        assert len(chat_nodes) == stack.chat_replicas, chat_nodes
        bystander, _ = await stack.connect(session, "chat", "bystander")
        revoke = f"{stack.base}/admin/api/revoke"
        async with session.post(
            revoke, json={"user": "banned"}, headers={"Authorization": "Bearer wrong"}
        ) as refused:
            assert refused.status == 401
        async with session.post(
            revoke, json={"user": "banned"}, headers={"Authorization": f"Bearer {stack.admin_key}"}
        ) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["user"] == "banned"
        codes = await asyncio.gather(*(receive_close(ws) for ws in sockets))
        assert codes == [4011] * len(sockets)
        with pytest.raises(aiohttp.WSServerHandshakeError) as old_token:
            await session.ws_connect(f"{stack.wss}/chat/ws", params={"token": banned})
        assert old_token.value.status == 401
        await bystander.send_json({"op": "sub", "ch": "e2e-revoke", "id": 1})
        reply = await bystander.receive_json(timeout=10)
        assert reply["op"] == "subscribed"  # nobody else was touched
        await bystander.close()
        await asyncio.sleep(1.05)  # a token of the next second is newer than the revocation
        ws, _ = await stack.connect(session, "chat", "banned")
        await ws.close()


async def test_one_user_cannot_hold_more_than_the_cap(stack: Stack):
    cap = 50  # WWWS_MAX_CONNECTIONS_PER_USER's default, per replica
    async with stack.session() as session:
        sockets = []
        refusal = None
        try:
            for _ in range(cap * stack.chat_replicas + 1):
                try:
                    ws, _ = await stack.connect(session, "chat", "hoarder")
                except aiohttp.WSServerHandshakeError as error:
                    refusal = error.status
                    break
                sockets.append(ws)
            assert refusal == 429, f"no refusal after {len(sockets)} connections"
            assert cap <= len(sockets) <= cap * stack.chat_replicas
            other, _ = await stack.connect(session, "chat", "someone-else")
            await other.close()
        finally:
            for ws in sockets:
                await ws.close()


IDP_CHECK = """
import json, sys
from services.kit.auth import TokenVerifier
from services.kit.jwks import KeySet
document, token = json.loads(sys.stdin.read())
print(TokenVerifier(None, KeySet.from_document(document)).verify_now(token).user)
"""


def test_the_service_image_verifies_identity_provider_tokens(stack: Stack):
    """RS256 and ES256 need the `cryptography` package in the image itself (the tests'
    environment has it anyway): verify one of each inside a running chat replica."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for private, alg in (
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ):
        jwk = jwt.algorithms.get_default_algorithms()[alg].to_jwk(
            private.public_key(), as_dict=True
        )
        document = {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}
        now = int(time.time())
        token = jwt.encode(
            {"sub": "idp-user", "iat": now, "exp": now + 60}, private, alg, headers={"kid": "k1"}
        )
        container = stack.containers("chat")[0]
        result = subprocess.run(
            ["docker", "exec", "-i", container.id, "python", "-c", IDP_CHECK],
            input=json.dumps([document, token]), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "idp-user"
