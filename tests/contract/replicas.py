"""In-process replicas for the contract tests: settings, tokens, a connected client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from helpers import SECRET, eventually, receive_op
from stack import free_port

from services.kit import CONTEXT, ServiceContext
from services.kit.auth import mint_token
from services.kit.backplane import Backplane
from services.kit.server import serve
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


@contextlib.asynccontextmanager
async def served(
    create_app: Callable[[Settings], web.Application], service: str, **overrides: Any
) -> AsyncIterator[tuple[int, ServiceContext]]:
    """One replica served as in production (``serve``: its own runner, the start-up GC
    policy; aiohttp's test server cancels a handler whose client goes, which a replica
    does not): its public port and context. The process' collector is left unfrozen."""
    port, internal = free_port(), free_port()
    app = create_app(
        make_settings(
            service,
            host="127.0.0.1",
            port=port,
            internal_port=internal,
            drain_seconds=0.0,
            **overrides,
        )
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, stop))
    try:
        await eventually(lambda: _accepting(port), what="the replica listening")
        await asyncio.sleep(0.05)  # serve() finishes its start-up after the listen
        yield port, app[CONTEXT]
    finally:
        stop.set()
        await server
        gc.unfreeze()


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
