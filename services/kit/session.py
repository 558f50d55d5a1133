"""One connection's life, from the upgrade request to its bookkeeping after the close.

The handshake checks (origin, token), the upgrade, ``hello`` and the service's connect
hook, the read loop and dispatch to the ops, the closing handshake, and what a closed
connection leaves behind (metrics, the replica's registry, the outbound peak). ``app.py``
builds the application and routes ``/<service>/ws`` here.

Closing: the server's close frame is written by the connection's outbound queue
(:meth:`Connection.close`, from any task), then this loop keeps reading, ignoring data,
until the client's close frame completes the handshake or ``close_timeout`` drops the
transport. aiohttp's own ``ws.close()`` would drop the TCP connection right after its
close frame when another task closes while the loop waits for a frame; the client's reply
then meets a closed socket and the client reports 1006 instead of the code it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from .auth import AuthError, Identity, check_origin, query_token
from .backplane import BackplaneUnavailable
from .channel_ops import CHANNEL_OPS, unsubscribe
from .connection import Connection
from .http_state_release import release_http_state
from .metrics import close_code_label
from .outbound import pong_frame
from .protocol import (
    ClientFrame,
    CloseCode,
    ErrorCode,
    ProtocolError,
    encode,
    error_frame,
    parse_client_frame,
)
from .ratelimit import FloodGuard, Verdict
from .revocation import check_not_revoked
from .service import CONTEXT, OpHandler, ServiceContext, ServiceSpec
from .token_expiry import op_refresh, stop_expiry, watch_expiry

__all__ = [
    "FRAME_BURST",
    "FRAME_RATE",
    "HARD_FRAME_LIMIT_FACTOR",
    "client_ops",
    "websocket_endpoint",
]

log = logging.getLogger(__name__)

# aiohttp refuses a frame as soon as its header announces more than its limit, then
# closes the socket with the rest of the frame unread: the kernel answers with a reset,
# and a proxy in between may drop our 1009 close frame with it. So aiohttp's limit is a
# hard cap well above ours; frames between the two are read whole and closed cleanly.
HARD_FRAME_LIMIT_FACTOR = 4

# Frames a client may send per second (bursts of twice that) before `rate_limited`.
FRAME_RATE = 50.0
FRAME_BURST = 100


#: sessions' cleanups still running (see websocket_endpoint)
_cleanups: set[asyncio.Future[None]] = set()


async def websocket_endpoint(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    identity = await _check_handshake(ctx, request)
    settings = ctx.settings
    ws = web.WebSocketResponse(
        # pings are the replica's heartbeat (heartbeat.py); the read loop answers the
        # client's own pings and sees its pongs
        autoping=False,
        max_msg_size=settings.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
        compress=False,  # encode-once fan-out needs uncompressed frames
        timeout=settings.close_timeout,
        # The session answers the client's close frame itself: after the server's own
        # close frame (written by the outbound queue) aiohttp would send a second one.
        autoclose=False,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the upgrade
        return ws
    release_http_state(request)
    conn = Connection(
        ws,
        transport,
        identity.user,
        ctx.metrics,
        settings.outbound_queue_bytes,
        settings.close_timeout,
    )
    conn.expires_at, conn.issued_at = identity.expires_at, identity.issued_at
    _opened(ctx, conn)
    try:
        if await _start(ctx, conn):
            ctx.heartbeat.add(conn)
            watch_expiry(ctx, conn)
            await _read_frames(ctx, conn, ws)
        await _finish_close(conn, ws)
    finally:
        # Shielded: a handler cancelled as its client goes (aiohttp's handler_cancellation,
        # on in its test server) or at shutdown still leaves its rooms and presence, and
        # ends. The loop keeps only weak references to tasks: the cleanup is held here.
        cleanup = asyncio.ensure_future(_closed(ctx, conn))
        _cleanups.add(cleanup)
        cleanup.add_done_callback(_cleanups.discard)
        await asyncio.shield(cleanup)
    return ws


async def _check_handshake(ctx: ServiceContext, request: web.Request) -> Identity:
    """The identity of an acceptable upgrade request; otherwise an HTTP refusal (counted),
    and nothing is upgraded."""
    status, reason = 0, ""
    if ctx.replica.backplane_lost:
        status, reason = 503, "backplane unavailable, try another replica"
    else:
        try:
            check_origin(request.headers.get("Origin"), ctx.settings.allowed_origins)
            identity = await ctx.verifier.verify(query_token(request.raw_path))
            await check_not_revoked(ctx, identity)
            cap = ctx.settings.max_connections_per_user
            if cap and ctx.replica.per_user[identity.user] >= cap:
                raise AuthError(429, f"at most {cap} connections per user on one replica")
            return identity
        except AuthError as error:
            status, reason = error.status, error.reason
        except BackplaneUnavailable:
            status, reason = 503, "backplane unavailable, try again"
    ctx.metrics.handshakes_refused.labels(ctx.spec.name, str(status)).inc()
    refusal = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 429: web.HTTPTooManyRequests}
    raise refusal.get(status, web.HTTPServiceUnavailable)(text=reason + "\n")


def _opened(ctx: ServiceContext, conn: Connection) -> None:
    ctx.replica.connections.add(conn)
    ctx.replica.per_user[conn.user] += 1
    ctx.metrics.connections.inc()
    ctx.metrics.connections_accepted.inc()
    log.info("connected", extra={"event": "connect", "conn": conn.id, "user": conn.user})


async def _start(ctx: ServiceContext, conn: Connection) -> bool:
    """Say ``hello`` and run the service's connect hook; False when the hook failed (the
    connection is then closing with 1013 or 1011)."""
    hello = {
        "op": "hello",
        "node": ctx.settings.node_id,
        "user": conn.user,
        "heartbeat": ctx.heartbeat.interval,
        "service": ctx.spec.name,
        "protocol": 1,
        "exp": conn.expires_at,
    }
    conn.send(encode(hello), "hello")
    if ctx.spec.on_connect is None:
        return True
    # The client hears `hello` only once the service has set it up (presence joined,
    # automatic subscriptions made), so whatever it does next sees that.
    conn.hold()
    try:
        await ctx.spec.on_connect(ctx, conn)
    except BackplaneUnavailable as error:
        ctx.metrics.backplane_errors.inc()
        log.warning(
            "connect hook failed: backplane unavailable",
            extra={"event": "connect_failed", "conn": conn.id, "error": str(error)[:200]},
        )
        conn.close(CloseCode.TRY_AGAIN_LATER, "backplane unavailable, try again later")
        return False
    except Exception as error:
        log.error(
            "connect hook failed",
            extra={"event": "connect_failed", "conn": conn.id, "error": repr(error)[:200]},
        )
        conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        return False
    conn.release()
    return True


async def op_ping(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    """``{"op":"ping","id":N}``: a client that cannot see WebSocket pings (a browser) asks
    whether the server is still there after a quiet heartbeat interval."""
    reply: dict[str, Any] = {"op": "pong"}
    if frame.id is not None:
        reply["id"] = frame.id
    conn.send(encode(reply), "pong")


def client_ops(spec: ServiceSpec[Any]) -> dict[str, OpHandler[Any]]:
    """Every op a client of ``spec``'s service may send, by name (built once per replica)."""
    return {**CHANNEL_OPS, "refresh": op_refresh, "ping": op_ping, **spec.ops}


async def _read_frames(ctx: ServiceContext, conn: Connection, ws: web.WebSocketResponse) -> None:
    """Dispatch the client's frames until either side closes."""
    ops = ctx.ops
    guard = FloodGuard(FRAME_RATE, FRAME_BURST)
    max_frame_bytes = ctx.settings.max_frame_bytes
    while True:
        message = await ws.receive()
        try:
            conn.ping_outstanding = False  # any frame from the client answers the ping
            if message.type is WSMsgType.PONG:
                continue
            if message.type is WSMsgType.PING:
                conn.send_control(pong_frame(message.data))
                continue
            if conn.close_code is not None:
                if message.type in _ENDS:
                    return
                continue  # the server closed: data before the client's close frame is dropped
            if message.type in _ENDS:
                # the client closed (answered after the loop), the socket is gone, or aiohttp
                # refused a frame (ERROR: it closed with 1007/1009 itself)
                return
            if message.type is not WSMsgType.TEXT:
                conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
                continue
            if len(message.data) > max_frame_bytes:
                too_big = f"frames are limited to {max_frame_bytes} bytes"
                conn.close(CloseCode.MESSAGE_TOO_BIG, too_big)
                continue
            verdict = guard.check()
            if verdict is Verdict.CLOSE:
                conn.close(CloseCode.RATE_LIMITED, "too many frames")
                continue
            if verdict is Verdict.REFUSE:
                conn.send(error_frame(ErrorCode.RATE_LIMITED, "slow down"), "error")
                continue
            await _dispatch(ctx, conn, ops, message.data)
        finally:
            # not kept while the next frame is awaited, which for most connections is long
            # (an idle one's last frame is the pong of its last heartbeat)
            del message


_ENDS = {WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR}


async def _dispatch(
    ctx: ServiceContext,
    conn: Connection,
    ops: dict[str, OpHandler[Any]],
    text: str,
) -> None:
    frame: ClientFrame | None = None
    try:
        frame = parse_client_frame(text)
        handler = ops.get(frame.op)
        if handler is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {frame.op!r}", frame.id)
        # labelled only with ops the service has: clients cannot grow the label set
        ctx.metrics.received(frame.op).inc()
        await handler(ctx, conn, frame)
    except ProtocolError as error:
        conn.send(error_frame(error.code, error.message, error.frame_id), "error")
    except BackplaneUnavailable:
        ctx.metrics.backplane_errors.inc()
        frame_id = frame.id if frame is not None else None
        message_text = "backplane unavailable, try again"
        conn.send(error_frame(ErrorCode.UNAVAILABLE, message_text, frame_id), "error")
    except Exception:
        log.exception("handler failed", extra={"event": "handler_error", "conn": conn.id})
        conn.close(CloseCode.INTERNAL_ERROR, "internal error")


async def _finish_close(conn: Connection, ws: web.WebSocketResponse) -> None:
    """End the closing handshake the loop stopped in."""
    if conn.close_code is not None:
        conn.drop()  # the client answered our close frame (or the wait timed out)
        return
    # The client closed first (or the socket is gone): aiohttp's writer answers.
    with contextlib.suppress(Exception):
        await ws.close()


async def _closed(ctx: ServiceContext, conn: Connection) -> None:
    """What a closed connection leaves behind: registry, metrics, subscriptions, hook."""
    stop_expiry(ctx, conn)
    ctx.heartbeat.remove(conn)
    ctx.replica.connections.discard(conn)
    ctx.replica.per_user[conn.user] -= 1
    if ctx.replica.per_user[conn.user] <= 0:
        del ctx.replica.per_user[conn.user]
    ctx.replica.outbound_peak = max(ctx.replica.outbound_peak, conn.outbound_peak_bytes)
    ctx.metrics.connections.dec()
    for channel in conn.subscriptions:  # a tuple: unsubscribing replaces it, not this one
        with contextlib.suppress(Exception):
            await unsubscribe(ctx, conn, channel)
    if ctx.spec.on_disconnect is not None:
        try:
            await ctx.spec.on_disconnect(ctx, conn)
        except Exception:
            log.exception("disconnect hook failed", extra={"conn": conn.id})
    code = conn.close_code or conn.ws.close_code or CloseCode.NORMAL
    ctx.metrics.connections_closed.labels(ctx.spec.name, close_code_label(code)).inc()
    log.info(
        "disconnected",
        extra={"event": "disconnect", "conn": conn.id, "user": conn.user, "code": int(code)},
    )
    conn.end()
