"""Room membership: who is in a room, with join/leave events, across replicas.

A user joins a room with their first subscribed connection and leaves with their last;
a replica that dies takes its users out within the presence TTL (see services.kit.roster).
"""

from __future__ import annotations

from aiohttp import web

from services.kit.connection import Connection
from services.kit.protocol import ClientFrame, ErrorCode, ProtocolError, encode, require_channel
from services.kit.roster import Roster, add_roster
from services.kit.service import ServiceContext

__all__ = ["op_members", "room_joined", "room_left", "setup_membership"]


def events_channel(room: str) -> str:
    # '#' is not allowed in client channel names: nobody can subscribe or publish here.
    return f"#members:{room}"


def send_change(conn: Connection, room: str, user: str, present: bool) -> None:
    op = "join" if present else "leave"
    conn.send(encode({"op": op, "ch": room, "user": user}), op)


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
    users = sorted(await membership(ctx).members(room))
    conn.send(encode({"op": "members", "id": frame.id, "ch": room, "users": users}), "members")


def setup_membership(app: web.Application, ctx: ServiceContext[Roster]) -> Roster:
    """The chat service's state: its room membership roster."""
    return add_roster(app, ctx, events_channel, send_change)
