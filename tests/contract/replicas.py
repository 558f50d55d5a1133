"""In-process replicas for the contract tests: settings, tokens, a connected client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from helpers import SECRET, receive_op

from services.kit.auth import mint_token
from services.kit.backplane import Backplane
from services.kit.settings import Settings

AppFactory = Callable[[Settings, Backplane | None], web.Application]


def make_settings(service: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "service": service,
        "token_secret": SECRET,
        "allowed_origins": ("https://localhost",),
        "node_id": "test-node",
        "heartbeat_seconds": 25.0,
    }
    values.update(overrides)
    return Settings(**values)


def token(user: str) -> str:
    return mint_token(user, SECRET)


class Replicas:
    """Several in-process replicas of one service sharing one backplane store, each
    served by pytest-aiohttp's ``aiohttp_client`` (which also closes them)."""

    def __init__(self, new_backplane: Callable[[], Backplane], aiohttp_client: Any) -> None:
        self.new_backplane = new_backplane
        self._aiohttp_client = aiohttp_client

    async def start(self, create_app: AppFactory, service: str, **overrides: Any) -> TestClient:
        app = create_app(make_settings(service, **overrides), self.new_backplane())
        client: TestClient = await self._aiohttp_client(app)
        return client


Connect = Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]]


async def connect(
    client: TestClient, service: str, user: str = "alice", **kwargs: Any
) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect(f"/{service}/ws", params={"token": token(user)}, **kwargs)
    hello = await receive_op(ws, "hello")
    assert hello["user"] == user
    return ws
