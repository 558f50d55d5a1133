"""The chat service: rooms with history, resume and scrollback."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.kit import (
    ClientFrame,
    Connection,
    ErrorCode,
    ProtocolError,
    ServiceContext,
    ServiceSpec,
    Settings,
    build_app,
    encode,
    msg_frame,
    require_channel,
)
from services.kit.backplane import MAX_OFFSET, Backplane
from services.kit.protocol import optional_int
from services.kit.roster import Roster

from .channels import ChatRooms
from .membership import op_members, room_joined, room_left, setup_membership

__all__ = ["create_app"]

MAX_HISTORY_PAGE = 100


async def op_history(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    """Scrollback: a page of publications older than ``before`` (default: the newest)."""
    channel = require_channel(frame)
    before = frame.body.get("before")
    if before is not None and (
        not isinstance(before, int) or isinstance(before, bool) or not 0 <= before <= MAX_OFFSET
    ):
        message = f"before must be an offset from 0 to {MAX_OFFSET}"
        raise ProtocolError(ErrorCode.BAD_REQUEST, message, frame.id)
    limit = optional_int(frame, "limit", 50, 1, MAX_HISTORY_PAGE)
    page = await ctx.hub.history(channel, before, limit)
    head = {"op": "history", "id": frame.id, "ch": channel, "epoch": page.epoch, "top": page.top}
    items = b",".join(msg_frame(channel, p.offset, p.data) for p in page.publications)
    conn.send(encode(head)[:-1] + b',"publications":[' + items + b"]}", "history")


# The chat service's own state is its room membership roster.
SPEC: ServiceSpec[Roster] = ServiceSpec(
    name="chat",
    policy=ChatRooms(),
    ops={"history": op_history, "members": op_members},
    on_subscribe=room_joined,
    on_unsubscribe=room_left,
    setup=setup_membership,
    static_dir=Path(__file__).parent / "static",
)


def create_app(settings: Settings, backplane: Backplane | None = None) -> web.Application:
    return build_app(settings, SPEC, backplane)
