"""The telephony service: server-watched presence and call signalling."""

from __future__ import annotations

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
from services.kit.roster import Roster, add_roster
from services.kit.service import ChannelPolicy, ServiceContext, ServiceSpec
from services.kit.settings import Settings

from .calls import CallDesk

__all__ = ["create_app"]

MAX_WATCHED = 200
ONLINE = "online"  # the roster group of every connected user
# Not a valid client channel name ('#'), so no client can subscribe or publish to it.
EVENTS_CHANNEL = "#presence"
ROSTER = "roster"
DESK = "calls"


def roster(ctx: ServiceContext) -> Roster:
    return ctx.extra(ROSTER, Roster)


def _users(frame: ClientFrame) -> list[str]:
    users = require_str_list(frame, "users", MAX_WATCHED)
    bad = [u for u in users if not USER_PATTERN.fullmatch(u)]
    if bad:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid user ids: {bad[:5]}", frame.id)
    return list(dict.fromkeys(users))


def _status(present: bool) -> str:
    return "online" if present else "offline"


def send_presence(conn: Connection, group: str, user: str, present: bool) -> None:
    conn.send(encode({"op": "presence", "user": user, "status": _status(present)}), "presence")


async def op_watch(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    state = await roster(ctx).listen_users(ONLINE, users, conn)
    reply = {
        "op": "presence_state",
        "id": frame.id,
        "users": {u: _status(p) for u, p in state.items()},
    }
    conn.send(encode(reply), "presence_state")
    roster(ctx).activate(conn)


async def op_unwatch(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    roster(ctx).unlisten_users(ONLINE, users, conn)
    conn.send(encode({"op": "unwatched", "id": frame.id, "users": users}), "unwatched")


def desk(ctx: ServiceContext) -> CallDesk:
    return ctx.extra(DESK, CallDesk)


async def op_call(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).call(conn, frame)


async def op_answer(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).answer(conn, frame)


async def op_reject(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).reject(conn, frame)


async def op_hangup(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).hangup(conn, frame)


async def op_signal(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).signal(conn, frame)


async def on_connect(ctx: ServiceContext, conn: Connection) -> None:
    await desk(ctx).connected(conn)
    await roster(ctx).join(ONLINE, conn)


async def on_disconnect(ctx: ServiceContext, conn: Connection) -> None:
    await desk(ctx).disconnected(conn)
    roster(ctx).drop(conn)
    await roster(ctx).leave(ONLINE, conn)


class NoChannels(ChannelPolicy):
    """Telephony speaks in presence and call frames, not channels."""

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels: use watch")

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        raise self.refuse(frame, ErrorCode.NOT_FOUND, "telephony has no channels")


def setup(app: web.Application, ctx: ServiceContext) -> None:
    ctx.extras[ROSTER] = add_roster(app, ctx, lambda _: EVENTS_CHANNEL, send_presence)
    ctx.extras[DESK] = CallDesk(ctx, roster(ctx), ONLINE, ctx.settings.ring_timeout_seconds)


SPEC = ServiceSpec(
    name="telephony",
    policy=NoChannels(),
    ops={
        "watch": op_watch,
        "unwatch": op_unwatch,
        "call": op_call,
        "answer": op_answer,
        "reject": op_reject,
        "hangup": op_hangup,
        "signal": op_signal,
    },
    on_connect=on_connect,
    on_disconnect=on_disconnect,
    setup=setup,
    static_dir=Path(__file__).parent / "static",
)


def create_app(settings: Settings, backplane: Backplane | None = None) -> web.Application:
    return build_app(settings, SPEC, backplane)
