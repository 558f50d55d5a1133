"""The channel ops every service has: ``sub``, ``unsub`` and ``pub``."""

from __future__ import annotations

import orjson

from .connection import Connection
from .hub import SubscribeResult
from .protocol import (
    ClientFrame,
    CloseCode,
    ErrorCode,
    ProtocolError,
    Since,
    encode,
    optional_since,
    require_channel,
    require_object,
    subscribed_frame,
)
from .ratelimit import FloodGuard, Verdict
from .service import OpHandler, ServiceContext

__all__ = ["CHANNEL_OPS", "MAX_SUBSCRIPTIONS", "subscribe", "unsubscribe"]

MAX_SUBSCRIPTIONS = 100
MAX_IDEM = 64  # characters of a pub's idempotency key


async def op_sub(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    channel = require_channel(frame)
    since = optional_since(frame)
    ctx.spec.policy.authorize_subscribe(conn, channel, frame)
    await subscribe(ctx, conn, channel, frame.id, since)


async def subscribe(
    ctx: ServiceContext,
    conn: Connection,
    channel: str,
    frame_id: str | int | None,
    since: Since | None,
) -> SubscribeResult:
    """Subscribe ``conn``; the ``subscribed`` reply is queued before any live ``msg``."""
    if channel in conn.subscriptions:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"already subscribed to {channel}", frame_id)
    if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"at most {MAX_SUBSCRIPTIONS} subscriptions", frame_id
        )

    def reply(result: SubscribeResult) -> None:
        conn.send(
            subscribed_frame(
                frame_id,
                channel,
                result.epoch,
                result.offset,
                result.recovered,
                result.publications,
            ),
            "subscribed",
        )

    conn.add_subscription(channel)
    ctx.metrics.subscriptions.inc()
    try:
        window = ctx.spec.policy.window(channel)
        result = await ctx.hub.subscribe(conn, channel, since, window, reply)
    except BaseException:
        conn.drop_subscription(channel)
        ctx.metrics.subscriptions.dec()
        raise
    ctx.metrics.channels.set(ctx.hub.channel_count)
    if ctx.spec.on_subscribe is not None:
        await ctx.spec.on_subscribe(ctx, conn, channel)
    return result


async def op_unsub(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    channel = require_channel(frame)
    if channel not in conn.subscriptions:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"not subscribed to {channel}", frame.id)
    await unsubscribe(ctx, conn, channel)
    conn.send(encode({"op": "unsubscribed", "id": frame.id, "ch": channel}), "unsubscribed")


async def unsubscribe(ctx: ServiceContext, conn: Connection, channel: str) -> None:
    if ctx.spec.on_unsubscribe is not None:
        await ctx.spec.on_unsubscribe(ctx, conn, channel)
    conn.drop_subscription(channel)
    ctx.metrics.subscriptions.dec()
    await ctx.hub.unsubscribe(conn, channel)
    ctx.metrics.channels.set(ctx.hub.channel_count)


async def op_pub(ctx: ServiceContext, conn: Connection, frame: ClientFrame) -> None:
    policy = ctx.spec.policy
    if policy.publish_rate is not None:
        if conn.publish_guard is None:
            conn.publish_guard = FloodGuard(*policy.publish_rate)
        verdict = conn.publish_guard.check()
        if verdict is Verdict.CLOSE:
            conn.close(CloseCode.RATE_LIMITED, "publishing too fast")
            return
        if verdict is Verdict.REFUSE:
            rate, burst = policy.publish_rate
            message = f"at most {rate:g} publications/s (bursts of {burst})"
            raise ProtocolError(ErrorCode.RATE_LIMITED, message, frame.id)
    channel = require_channel(frame)
    data = require_object(frame, "data")
    data = policy.prepare_publish(conn, channel, data, frame)
    payload = orjson.dumps(data)
    if len(payload) > policy.max_data_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"data is over {policy.max_data_bytes} bytes", frame.id
        )
    idem = frame.body.get("idem")
    if idem is not None and (not isinstance(idem, str) or not 0 < len(idem) <= MAX_IDEM):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"idem must be a string of 1-{MAX_IDEM} characters", frame.id
        )
    # Scoped to the user, so nobody can use up another user's key to drop their message.
    key = "" if idem is None else f"{conn.user}/{idem}"
    _, offset = await ctx.hub.publish(channel, payload, idempotency_key=key)
    conn.send(encode({"op": "ack", "id": frame.id, "ch": channel, "offset": offset}), "ack")


CHANNEL_OPS: dict[str, OpHandler] = {"sub": op_sub, "unsub": op_unsub, "pub": op_pub}
