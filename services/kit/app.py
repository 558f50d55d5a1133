"""The app factory every service uses: handshake, envelope dispatch, hub, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from .auth import AuthError, check_origin, verify_token
from .backplane import Backplane, BackplaneUnavailable, Publication, open_backplane
from .connection import Connection, publication_age
from .hub import ChannelHub
from .loop_lag import watch_loop_lag
from .metrics import Metrics
from .ops import CHANNEL_OPS, unsubscribe
from .pages import add_page_routes
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
from .replica import ReplicaState
from .service import ServiceContext, ServiceSpec
from .settings import Settings

__all__ = ["CONTEXT", "build_app"]

log = logging.getLogger(__name__)

CONTEXT = web.AppKey("context", ServiceContext)

# aiohttp refuses a frame as soon as its header announces more than its limit, then
# closes the socket with the rest of the frame unread: the kernel answers with a reset,
# and a proxy in between may drop our 1009 close frame with it. So aiohttp's limit is a
# hard cap well above ours; frames between the two are read whole and closed cleanly.
HARD_FRAME_LIMIT_FACTOR = 4

# Frames a client may send per second (bursts of twice that) before `rate_limited`.
FRAME_RATE = 50.0
FRAME_BURST = 100


def build_app(
    settings: Settings, spec: ServiceSpec, backplane: Backplane | None = None
) -> web.Application:
    """A pure factory: nothing starts until the app runs (tests call it directly)."""
    app = web.Application()
    metrics = Metrics.create(spec.name)
    if backplane is None:
        backplane = open_backplane(
            settings.backplane_url,
            settings.history_size,
            settings.history_ttl_seconds,
            settings.history_max_age_seconds,
        )

    def observe_fanout(publication: Publication, delivered: int) -> None:
        age = publication_age(publication)
        if age is not None:
            metrics.publish_delivery_latency.observe(age)

    hub = ChannelHub(backplane, spec.name, settings.history_size, observe_fanout)
    ctx = ServiceContext(
        settings=settings,
        spec=spec,
        backplane=backplane,
        hub=hub,
        metrics=metrics,
        replica=ReplicaState(settings.node_id),
    )
    metrics.heartbeat_interval.set(settings.heartbeat_seconds)
    metrics.outbound_peak.set_function(ctx.replica.peak_outbound_bytes)
    app[CONTEXT] = ctx
    app.router.add_get(f"/{spec.name}/ws", websocket_endpoint)
    add_page_routes(app, ctx)
    app.cleanup_ctx.append(_backplane_lifecycle)
    app.cleanup_ctx.append(_loop_lag_lifecycle)
    app.on_shutdown.append(_close_connections)
    if spec.setup is not None:
        spec.setup(app, ctx)
    return app


async def _backplane_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONTEXT].backplane.close()


async def _loop_lag_lifecycle(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(watch_loop_lag(app[CONTEXT].metrics))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_connections(app: web.Application) -> None:
    """Going away: every client is told to reconnect (to another replica) at once."""
    connections = list(app[CONTEXT].replica.connections)
    await asyncio.gather(
        *(c.close(CloseCode.GOING_AWAY, "server going away") for c in connections),
        return_exceptions=True,
    )


def _refuse(ctx: ServiceContext, error: AuthError) -> web.HTTPException:
    ctx.metrics.handshakes_refused.labels(ctx.spec.name, str(error.status)).inc()
    cls = web.HTTPForbidden if error.status == 403 else web.HTTPUnauthorized
    return cls(text=error.reason + "\n")


async def websocket_endpoint(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    try:
        check_origin(request.headers.get("Origin"), settings.allowed_origins)
        user = verify_token(request.query.get("token"), settings.token_secret)
    except AuthError as error:
        raise _refuse(ctx, error) from None
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_seconds,
        max_msg_size=settings.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
        compress=False,  # encode-once fan-out needs uncompressed frames
        timeout=settings.close_timeout,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the upgrade
        return ws
    conn = Connection(ws, transport, user, ctx.metrics, settings.outbound_queue_bytes)
    ctx.replica.connections.add(conn)
    ctx.metrics.connections.inc()
    ctx.metrics.connections_accepted.inc()
    log.info("connected", extra={"event": "connect", "conn": conn.id, "user": user})
    hello = {
        "op": "hello",
        "node": settings.node_id,
        "user": user,
        "heartbeat": settings.heartbeat_seconds,
        "service": ctx.spec.name,
        "protocol": 1,
    }
    conn.send(encode(hello), "hello")
    try:
        if ctx.spec.on_connect is not None:
            # The client hears `hello` only once the service has set it up (presence
            # joined, automatic subscriptions made), so whatever it does next sees that.
            conn.hold()
            await ctx.spec.on_connect(ctx, conn)
            conn.release()
        await _read_frames(ctx, conn, ws)
    finally:
        await _disconnect(ctx, conn)
    return ws


async def _read_frames(ctx: ServiceContext, conn: Connection, ws: web.WebSocketResponse) -> None:
    ops = {**CHANNEL_OPS, **ctx.spec.ops}
    guard = FloodGuard(FRAME_RATE, FRAME_BURST)
    received = ctx.metrics.messages_received
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            await conn.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            return
        if message.type is not WSMsgType.TEXT:
            continue  # ERROR: aiohttp already closed with 1007/1009
        if len(message.data) > ctx.settings.max_frame_bytes:
            limit = ctx.settings.max_frame_bytes
            await conn.close(CloseCode.MESSAGE_TOO_BIG, f"frames are limited to {limit} bytes")
            return
        verdict = guard.check()
        if verdict is Verdict.CLOSE:
            await conn.close(CloseCode.RATE_LIMITED, "too many frames")
            return
        if verdict is Verdict.REFUSE:
            conn.send(error_frame(ErrorCode.RATE_LIMITED, "slow down"), "error")
            continue
        frame: ClientFrame | None = None
        try:
            frame = parse_client_frame(message.data)
            handler = ops.get(frame.op)
            if handler is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown op {frame.op!r}", frame.id)
            received.labels(ctx.spec.name, frame.op).inc()
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
            await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
            return


async def _disconnect(ctx: ServiceContext, conn: Connection) -> None:
    ctx.replica.connections.discard(conn)
    ctx.replica.outbound_peak = max(ctx.replica.outbound_peak, conn.outbound_peak_bytes)
    ctx.metrics.connections.dec()
    for channel in list(conn.subscriptions):
        with contextlib.suppress(Exception):
            await unsubscribe(ctx, conn, channel)
    if ctx.spec.on_disconnect is not None:
        try:
            await ctx.spec.on_disconnect(ctx, conn)
        except Exception:
            log.exception("disconnect hook failed", extra={"conn": conn.id})
    code = conn.close_code or conn.ws.close_code or CloseCode.NORMAL
    ctx.metrics.connections_closed.labels(ctx.spec.name, str(int(code))).inc()
    log.info(
        "disconnected",
        extra={"event": "disconnect", "conn": conn.id, "user": conn.user, "code": int(code)},
    )
