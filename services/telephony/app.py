"""The telephony service: presence now; call signalling builds on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from services.kit.app import build_app
from services.kit.auth import USER_PATTERN
from services.kit.backplane import Backplane
from services.kit.connection import Connection
from services.kit.protocol import (
    ClientFrame,
    ErrorCode,
    ProtocolError,
    encode,
    require_str_list,
)
from services.kit.service import ChannelPolicy, ServiceContext, ServiceSpec
from services.kit.settings import Settings

from .presence import PresenceTracker

__all__ = ["create_app"]

MAX_WATCHED = 200
TRACKER = "presence"


def tracker(ctx: ServiceContext) -> PresenceTracker:
    found = ctx.extras[TRACKER]
    assert isinstance(found, PresenceTracker)
    return found


def _users(frame: ClientFrame) -> list[str]:
    users = require_str_list(frame, "users", MAX_WATCHED)
    bad = [u for u in users if not USER_PATTERN.fullmatch(u)]
    if bad:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid user ids: {bad[:5]}", frame.id)
    return list(dict.fromkeys(users))


async def op_watch(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    presence = tracker(ctx)
    state = await presence.watch(conn, users)
    conn.send(encode({"op": "presence_state", "id": frame.id, "users": state}), "presence_state")
    presence.confirm(conn, state)


async def op_unwatch(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    tracker(ctx).unwatch(conn, users)
    conn.send(encode({"op": "unwatched", "id": frame.id, "users": users}), "unwatched")


async def on_connect(ctx: ServiceContext, conn: Connection) -> None:
    await tracker(ctx).connected(conn)


async def on_disconnect(ctx: ServiceContext, conn: Connection) -> None:
    await tracker(ctx).disconnected(conn)


class NoChannels(ChannelPolicy):
    """Telephony speaks in presence and call frames, not channels."""

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels: use watch")

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels")


def setup(app: web.Application, ctx: ServiceContext) -> None:
    presence = PresenceTracker(
        ctx.backplane, ctx.hub, ctx.settings.node_id, ctx.settings.presence_ttl_seconds
    )
    ctx.extras[TRACKER] = presence

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        async for state in presence.lifecycle():
            yield state

    app.cleanup_ctx.append(lifecycle)


SPEC = ServiceSpec(
    name="telephony",
    policy=NoChannels(),
    ops={"watch": op_watch, "unwatch": op_unwatch},
    on_connect=on_connect,
    on_disconnect=on_disconnect,
    setup=setup,
    static_dir=Path(__file__).parent / "static",
)


def create_app(settings: Settings, backplane: Backplane | None = None) -> web.Application:
    return build_app(settings, SPEC, backplane)
