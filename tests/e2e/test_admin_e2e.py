"""The admin console through Traefik: the admin key opens it, and it sees every replica
of every service of the real stack (reports travel over the real Redis)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from helpers import receive_json, receive_op
from stack import Stack


async def test_the_console_sees_every_replica_through_traefik(stack: Stack):
    expected = {
        "chat": stack.chat_replicas,
        "ticker": stack.ticker_replicas,
        "telephony": stack.telephony_replicas,
        "admin": 1,
    }
    async with stack.session() as session:
        login = f"{stack.base}/admin/api/login"
        async with session.post(login, json={"key": "wrong"}) as refused:
            assert refused.status == 401
        async with session.post(login, json={"key": stack.admin_key}) as response:
            assert response.status == 200
            token = (await response.json())["token"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as user_token:
            await session.ws_connect(f"{stack.wss}/admin/ws", params={"token": stack.token("eve")})
        assert user_token.value.status == 401
        ws = await session.ws_connect(
            f"{stack.wss}/admin/ws", params={"token": token}, origin=stack.base
        )
        await receive_op(ws, "hello")
        seen: dict[str, int] = {}
        frame: dict[str, Any] = {}
        for _ in range(15):  # a push every 2 s; every replica reports within one interval
            frame = await receive_json(ws, timeout=10)
            if frame["op"] != "console":
                continue
            seen = {}
            for replica in frame["replicas"]:
                if not replica["silent"]:
                    seen[replica["service"]] = seen.get(replica["service"], 0) + 1
            if seen == expected:
                break
        assert seen == expected, frame
        await ws.close()
