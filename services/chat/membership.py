"""Room membership: who is in a room, with join/leave events, across replicas.

A user joins a room with their first subscribed connection and leaves with their last;
a replica that dies takes its users out within its liveness bound (see services.kit.roster).
A room's members hear its changes coalesced: one change as ``join``/``leave``, several in
one window as one ``members_diff``, so a burst of n joins costs O(n) frames, not O(n^2).
``members`` answers in pages of at most ``MEMBERS_PAGE`` users.
"""

from __future__ import annotations

import bisect

from aiohttp import web

from services.kit.connection import Connection
from services.kit.protocol import (
    ClientFrame,
    ErrorCode,
    ProtocolError,
    encode,
    optional_int,
    require_channel,
)
from services.kit.roster import Roster, add_roster
from services.kit.service import ServiceContext

__all__ = ["MEMBERS_PAGE", "op_members", "room_joined", "room_left", "setup_membership"]

MEMBERS_PAGE = 1000


def events_channel(room: str) -> str:
    # '#' is not allowed in client channel names: nobody can subscribe or publish here.
    return f"#members:{room}"


def send_change(conn: Connection, room: str, user: str, present: bool) -> None:
    op = "join" if present else "leave"
    conn.send(encode({"op": op, "ch": room, "user": user}), op)


def send_changes(conn: Connection, room: str, changes: dict[str, bool]) -> None:
    if len(changes) == 1:
        [(user, present)] = changes.items()
        send_change(conn, room, user, present)
        return
    joins = sorted(user for user, present in changes.items() if present)
    leaves = sorted(user for user, present in changes.items() if not present)
    frame = {"op": "members_diff", "ch": room, "joins": joins, "leaves": leaves}
    conn.send(encode(frame), "members_diff")


def membership(ctx: ServiceContext[Roster]) -> Roster:
    return ctx.state


async def room_joined(ctx: ServiceContext, conn: Connection, room: str) -> None:
    rooms = membership(ctx)
    await rooms.listen_group(room, conn)  # before joining: the joiner hears its own join
    await rooms.join(room, conn)


async def room_left(ctx: ServiceContext, conn: Connection, room: str) -> None:
    rooms = membership(ctx)
    rooms.unlisten_group(room, conn)
    await rooms.leave(room, conn)


async def op_members(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    room = require_channel(frame)
    if room not in conn.subscriptions:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"subscribe to {room} first", frame.id)
    limit = optional_int(frame, "limit", MEMBERS_PAGE, 1, MEMBERS_PAGE)
    after = frame.body.get("after")
    if after is not None and not isinstance(after, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "after must be a user id", frame.id)
    users = sorted(await membership(ctx).members(room))
    if after is not None:
        users = users[bisect.bisect_right(users, after) :]
    reply = {"op": "members", "id": frame.id, "ch": room, "users": users[:limit]}
    if len(users) > limit:
        reply["next"] = users[limit - 1]  # send it as `after` for the next page
    conn.send(encode(reply), "members")


def setup_membership(app: web.Application, ctx: ServiceContext[Roster]) -> Roster:
    """The chat service's state: its room membership roster."""
    return add_roster(app, ctx, events_channel, send_change, send_changes)
