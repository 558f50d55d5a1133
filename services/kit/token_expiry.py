"""A connection lives no longer than its token: the client refreshes it over the socket.

``token_refresh_seconds`` before ``exp`` (or halfway through the token's remaining life,
if that is later) the server sends ``{"op":"refresh","exp":E,"in":S}``; the client
answers ``{"op":"refresh","token":"<new JWT>"}`` (same user, not revoked) and hears
``{"op":"refreshed","exp":E2}``. A connection whose token reaches ``exp`` unrefreshed is
closed with **4010**: get a new token, reconnect, resume. One deadline per connection (the
notice, then the close; deadlines.py: timers shared by the deadlines of the same few
seconds), re-armed by each refresh.
"""

from __future__ import annotations

import time

from .auth import AuthError
from .connection import Connection
from .deadlines import Deadlines
from .protocol import ClientFrame, CloseCode, ErrorCode, ProtocolError, encode, require_str
from .revocation import check_not_revoked
from .service import ServiceContext

__all__ = ["MAX_TOKEN_LENGTH", "op_refresh", "stop_expiry", "watch_expiry"]

MAX_TOKEN_LENGTH = 8192


# Deadlines share timers (deadlines.py), so they come up to a slot late. A refresh notice
# that leaves the client at least COARSE_MARGIN before exp (the default 60 s window) goes in
# COARSE_SLOT slots: most connections of a replica then share a timer per 5 s. Other
# notices, and the closes at exp, go in FINE_SLOT slots.
COARSE_SLOT = 5.0
COARSE_MARGIN = 10 * COARSE_SLOT
FINE_SLOT = 0.1
NOTICE, CLOSE = 0, 1  # what a connection's deadline is for


def watch_expiry(ctx: ServiceContext, conn: Connection) -> None:
    """Arm (or re-arm) the connection's deadline for its current token."""
    stop_expiry(ctx, conn)
    life = conn.expires_at - time.time()
    # Not before half of what is left: a token shorter than the window would otherwise be
    # noticed at once, refreshed with another as short, noticed at once again, and so on.
    notice_in = max(life - ctx.settings.token_refresh_seconds, life / 2)
    if notice_in <= 0:
        _notify(ctx, conn)  # the token is already inside the refresh window
        return
    coarse, fine = _deadlines(ctx)
    if life - notice_in - COARSE_SLOT >= COARSE_MARGIN:
        coarse.set(conn, notice_in, NOTICE)
    else:
        fine.set(conn, notice_in, NOTICE)


def stop_expiry(ctx: ServiceContext, conn: Connection) -> None:
    for deadlines in _deadlines(ctx):
        deadlines.cancel(conn)


def _deadlines(ctx: ServiceContext) -> tuple[Deadlines[Connection], Deadlines[Connection]]:
    """The replica's coarse and fine token deadlines, made on first use."""
    if ctx.token_deadlines is None:

        def due(conn: Connection, stage: int) -> None:
            if stage == NOTICE:
                _notify(ctx, conn)
            else:
                _expire(conn)

        ctx.token_deadlines = (Deadlines(due, COARSE_SLOT), Deadlines(due, FINE_SLOT))
    return ctx.token_deadlines


def _notify(ctx: ServiceContext, conn: Connection) -> None:
    if conn.close_code is not None:
        return
    remaining = max(0.0, conn.expires_at - time.time())
    notice = {"op": "refresh", "exp": conn.expires_at, "in": round(remaining, 3)}
    conn.send(encode(notice), "refresh")
    if remaining > 0:
        _deadlines(ctx)[1].set(conn, remaining, CLOSE)
    else:
        _expire(conn)  # at exp already: a refresh now would come too late


def _expire(conn: Connection) -> None:
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
