"""A connection lives no longer than its token: the client refreshes it over the socket.

``token_refresh_seconds`` before ``exp`` (or halfway through the token's remaining life,
if that is later) the server sends ``{"op":"refresh","exp":E,"in":S}``; the client
answers ``{"op":"refresh","token":"<new JWT>"}`` (same user, not revoked) and hears
``{"op":"refreshed","exp":E2}``. A connection whose token reaches ``exp`` unrefreshed is
closed with **4010**: get a new token, reconnect, resume. One timer per connection (the
notice, then the close), re-armed by each refresh.
"""

from __future__ import annotations

import asyncio
import time

from .auth import AuthError
from .connection import Connection
from .protocol import ClientFrame, CloseCode, ErrorCode, ProtocolError, encode, require_str
from .revocation import check_not_revoked
from .service import ServiceContext

__all__ = ["MAX_TOKEN_LENGTH", "op_refresh", "stop_expiry", "watch_expiry"]

MAX_TOKEN_LENGTH = 8192


def watch_expiry(ctx: ServiceContext, conn: Connection) -> None:
    """Arm (or re-arm) the connection's timer for its current token."""
    stop_expiry(conn)
    life = conn.expires_at - time.time()
    # Not before half of what is left: a token shorter than the window would otherwise be
    # noticed at once, refreshed with another as short, noticed at once again, and so on.
    notice_in = max(life - ctx.settings.token_refresh_seconds, life / 2)
    if notice_in > 0:
        loop = asyncio.get_running_loop()
        conn.expiry_timer = loop.call_later(notice_in, _notify, ctx, conn)
    else:
        _notify(ctx, conn)  # the token is already inside the refresh window


def stop_expiry(conn: Connection) -> None:
    if conn.expiry_timer is not None:
        conn.expiry_timer.cancel()
        conn.expiry_timer = None


def _notify(ctx: ServiceContext, conn: Connection) -> None:
    if conn.close_code is not None:
        return
    remaining = max(0.0, conn.expires_at - time.time())
    notice = {"op": "refresh", "exp": conn.expires_at, "in": round(remaining, 3)}
    conn.send(encode(notice), "refresh")
    conn.expiry_timer = asyncio.get_running_loop().call_later(remaining, _expire, conn)


def _expire(conn: Connection) -> None:
    conn.expiry_timer = None
    conn.close(CloseCode.TOKEN_EXPIRED, "token expired: reconnect with a new token")


async def op_refresh(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    """``{"op":"refresh","token":"..."}``: the connection now lives by the new token."""
    token = require_str(frame, "token", MAX_TOKEN_LENGTH)
    try:
        identity = await ctx.verifier.verify(token)
        await check_not_revoked(ctx, identity)
    except AuthError as error:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, error.reason, frame.id) from None
    if identity.user != conn.user:
        raise ProtocolError(ErrorCode.FORBIDDEN, "the token is for another user", frame.id)
    conn.expires_at, conn.issued_at = identity.expires_at, identity.issued_at
    watch_expiry(ctx, conn)
    conn.send(encode({"op": "refreshed", "id": frame.id, "exp": identity.expires_at}), "refreshed")
