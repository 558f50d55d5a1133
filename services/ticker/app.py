"""The ticker gateway: prices and notifications pushed the moment they exist."""

from __future__ import annotations

import hmac
import time
from pathlib import Path

import orjson
from aiohttp import web

from services.kit import (
    CHANNEL_PATTERN,
    MAX_JSON_DEPTH,
    BackplaneUnavailable,
    ClientFrame,
    Connection,
    ServiceContext,
    ServiceSpec,
    Settings,
    build_app,
    load_json,
    op_sub,
    optional_since,
    require_channel,
    subscribe,
    unsubscribe,
)
from services.kit.backplane import Backplane

from .channels import SYMBOL_PATTERN, TickerChannels, personal_channel

__all__ = ["create_app"]

MAX_NOTIFICATION_BYTES = 16 * 1024


async def subscribe_personal_channel(ctx: ServiceContext, conn: Connection) -> None:
    """Every connection gets its notifications without asking (reply has no ``id``)."""
    await subscribe(ctx, conn, personal_channel(conn.user), None, None)


async def op_sub_personal(ctx: ServiceContext[None], conn: Connection, frame: ClientFrame) -> None:
    """``sub`` as every service has it, except that a ``sub`` of the personal channel
    replaces the automatic subscription instead of being refused as a duplicate.

    A client that reconnects resumes its notifications like any channel: ``sub`` with
    ``since`` answers exactly what it missed while away. The old subscription is gone
    before the new one reads, so every later notification comes once, from the new one;
    what the automatic subscription already sent has offsets at or below the reply's,
    which a resuming client ignores (see docs/protocol.md, ticker).
    """
    channel = require_channel(frame)
    if channel == personal_channel(conn.user) and channel in conn.subscriptions:
        optional_since(frame)  # refuse a malformed ``since`` before dropping anything
        await unsubscribe(ctx, conn, channel)
    await op_sub(ctx, conn, frame)


def add_publish_api(app: web.Application, ctx: ServiceContext[None]) -> None:
    async def publish(request: web.Request) -> web.Response:
        key = ctx.settings.api_key
        if key is None:
            raise web.HTTPServiceUnavailable(text="publishing is off: set WWWS_API_KEY\n")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise web.HTTPUnauthorized(text="bad or missing bearer API key\n")
        try:
            body = await request.json(loads=load_json)
        except ValueError:  # malformed, or nested too deep to store (JsonTooDeep)
            raise web.HTTPBadRequest(
                text=f"body must be JSON nested at most {MAX_JSON_DEPTH} levels\n"
            ) from None
        channel = _target(body)
        data = body["data"]
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="data must be a JSON object\n")
        data = {**data, "ts": round(time.time() * 1000, 3)}
        payload = orjson.dumps(data)
        if len(payload) > MAX_NOTIFICATION_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_NOTIFICATION_BYTES, len(payload))
        try:
            epoch, offset = await ctx.hub.publish(channel, payload)
        except BackplaneUnavailable:
            raise web.HTTPServiceUnavailable(text="backplane unavailable\n") from None
        return web.json_response({"channel": channel, "epoch": epoch, "offset": offset})

    app.router.add_post("/ticker/api/publish", publish)


def _target(body: object) -> str:
    if not isinstance(body, dict) or "data" not in body:
        raise web.HTTPBadRequest(text='body: {"user": "...", "data": {...}} or {"channel": ...}\n')
    user, channel = body.get("user"), body.get("channel")
    if isinstance(user, str) and channel is None:
        channel = personal_channel(user)
        if CHANNEL_PATTERN.fullmatch(channel):
            return channel
    elif isinstance(channel, str) and user is None and SYMBOL_PATTERN.fullmatch(channel):
        return channel
    raise web.HTTPBadRequest(text="give exactly one of a valid user or symbol channel\n")


SPEC: ServiceSpec[None] = ServiceSpec(
    name="ticker",
    policy=TickerChannels(),
    ops={"sub": op_sub_personal},
    on_connect=subscribe_personal_channel,
    setup=add_publish_api,
    static_dir=Path(__file__).parent / "static",
)


def create_app(settings: Settings, backplane: Backplane | None = None) -> web.Application:
    return build_app(settings, SPEC, backplane)
