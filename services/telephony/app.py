"""The telephony service: server-watched presence and call signalling."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.kit import (
    USER_PATTERN,
    ClientFrame,
    Connection,
    ErrorCode,
    ProtocolError,
    ServiceContext,
    ServiceSpec,
    Settings,
    build_app,
    encode,
    require_str,
    require_str_list,
)
from services.kit.backplane import Backplane
from services.kit.roster import Roster, add_roster

from .blocks import TooManyBlocked
from .calls import CallDesk
from .channels import NoChannels
from .limits import TelephonyLimits
from .watching import WatchBudget

__all__ = ["create_app"]

MAX_WATCHED = 200
ONLINE = "online"  # the roster group of every connected user
# Not a valid client channel name ('#'), so no client can subscribe or publish to it.
EVENTS_CHANNEL = "#presence"


@dataclass(frozen=True)
class Telephony:
    """The service's own per-replica state (``ctx.state``)."""

    roster: Roster  # who is online, and who watches whom
    desk: CallDesk  # the calls
    watching: WatchBudget  # how many users each connection watches


Context = ServiceContext[Telephony]


def roster(ctx: Context) -> Roster:
    return ctx.state.roster


def watching(ctx: Context) -> WatchBudget:
    return ctx.state.watching


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


async def op_watch(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    watching(ctx).admit(conn, users, frame.id)
    state = await roster(ctx).listen_users(ONLINE, users, conn)
    reply = {
        "op": "presence_state",
        "id": frame.id,
        "users": {u: _status(p) for u, p in state.items()},
    }
    conn.send(encode(reply), "presence_state")
    roster(ctx).activate(conn)


async def op_unwatch(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    users = _users(frame)
    roster(ctx).unlisten_users(ONLINE, users, conn)
    watching(ctx).release(conn, users)
    conn.send(encode({"op": "unwatched", "id": frame.id, "users": users}), "unwatched")


def desk(ctx: Context) -> CallDesk:
    return ctx.state.desk


async def op_call(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).call(conn, frame)


async def op_answer(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).answer(conn, frame)


async def op_reject(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).reject(conn, frame)


async def op_hangup(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).hangup(conn, frame)


async def op_signal(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await desk(ctx).signal(conn, frame)


def _user(frame: ClientFrame) -> str:
    user = require_str(frame, "user", 64)
    if not USER_PATTERN.fullmatch(user):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"invalid user id: {user!r}", frame.id)
    return user


async def _change_blocks(
    ctx: Context, conn: Connection, frame: ClientFrame, blocking: bool
) -> None:
    user = _user(frame)
    try:
        if blocking:
            users = await desk(ctx).blocks.change(conn.user, block=user, unblock=None)
        else:
            users = await desk(ctx).blocks.change(conn.user, block=None, unblock=user)
    except TooManyBlocked as exc:
        raise ProtocolError(ErrorCode.TOO_LARGE, str(exc), frame.id) from exc
    except TimeoutError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, str(exc), frame.id) from exc
    conn.send(encode({"op": "blocked", "id": frame.id, "users": users}), "blocked")


async def op_block(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await _change_blocks(ctx, conn, frame, blocking=True)


async def op_unblock(ctx: Context, conn: Connection, frame: ClientFrame) -> None:
    await _change_blocks(ctx, conn, frame, blocking=False)


async def on_connect(ctx: Context, conn: Connection) -> None:
    await desk(ctx).connected(conn)
    await roster(ctx).join(ONLINE, conn)


async def on_disconnect(ctx: Context, conn: Connection) -> None:
    await desk(ctx).disconnected(conn)
    roster(ctx).drop(conn)
    watching(ctx).drop(conn)
    await roster(ctx).leave(ONLINE, conn)


def setup(app: web.Application, ctx: Context, limits: TelephonyLimits) -> Telephony:
    online = add_roster(app, ctx, lambda _: EVENTS_CHANNEL, send_presence)
    calls = CallDesk(ctx, online, ONLINE, limits)

    async def keep_leases(_: web.Application) -> AsyncIterator[None]:
        async for state in calls.lifecycle():
            yield state

    app.cleanup_ctx.append(keep_leases)
    return Telephony(
        roster=online,
        desk=calls,
        watching=WatchBudget(limits.max_watched_users),
    )


SPEC: ServiceSpec[Telephony] = ServiceSpec(
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
        "block": op_block,
        "unblock": op_unblock,
    },
    on_connect=on_connect,
    on_disconnect=on_disconnect,
    static_dir=Path(__file__).parent / "static",
)


def create_app(
    settings: Settings,
    backplane: Backplane | None = None,
    limits: TelephonyLimits | None = None,
) -> web.Application:
    """The telephony app; ``limits`` default to the environment's (WWWS_* variables)."""
    chosen = TelephonyLimits.from_env(os.environ) if limits is None else limits

    def setup_with_limits(app: web.Application, ctx: Context) -> Telephony:
        return setup(app, ctx, chosen)

    return build_app(settings, dataclasses.replace(SPEC, setup=setup_with_limits), backplane)
