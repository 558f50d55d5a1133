"""The admin console: a live view of every replica, pushed over the kit's own protocol,
and the operator's actions (publish to a channel, look up a user's presence, revoke a
user: every connection of theirs closes with 4011 and their tokens are void).

Authentication is the admin key (``WWWS_API_KEY`` of this service; compose passes
``WWWS_ADMIN_API_KEY``): ``POST /admin/api/login`` exchanges it for a one-hour token that
opens ``/admin/ws``. Admin tokens are signed with a key derived from the admin key, never
with the users' token secret, so no user token (whoever minted it) opens the console, and
an admin token opens nothing else. Without an admin key the console is off: login answers
503 and no token can exist.

``POST /admin/api/revoke`` (``Authorization: Bearer <admin key>``, ``{"user": "alice"}``)
is the same revocation for scripts: a logout or a ban in the application's own backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.kit import (
    CHANNEL_PATTERN,
    USER_PATTERN,
    ChannelPolicy,
    ClientFrame,
    Connection,
    ErrorCode,
    ProtocolError,
    ServiceContext,
    ServiceSpec,
    Settings,
    build_app,
    encode,
    mint_token,
    require_object,
    require_str,
    revoke_user,
)
from services.kit.backplane import Backplane, BackplaneUnavailable

from .console import Console

__all__ = ["ADMIN_USER", "TOKEN_TTL", "admin_token_secret", "create_app"]

ADMIN_USER = "admin"
TOKEN_TTL = 3600.0
#: services whose channels the console may publish to (telephony has frames, not channels)
PUBLISHABLE = ("chat", "ticker")
MAX_DATA_BYTES = 16 * 1024
#: failed logins per minute (per replica) before every login is refused with 429
LOGIN_FAILURES_PER_MINUTE = 10
REPORTS_CHANNEL = "replicas"  # in the admin namespace: services.kit.replica_report
STATIC = Path(__file__).parent / "static"


def admin_token_secret(admin_key: str | None) -> str:
    """The key admin tokens are signed with: derived from the admin key, so every admin
    replica agrees without another secret; random (nothing verifies) when there is none."""
    if not admin_key:
        return secrets.token_urlsafe(32)
    return hmac.new(admin_key.encode(), b"wwws admin console tokens", hashlib.sha256).hexdigest()


@dataclass(eq=False)
class AdminState:
    console: Console
    viewers: set[Connection]
    failed_logins: list[float]


def state(ctx: ServiceContext[AdminState]) -> AdminState:
    return ctx.state


class AdminChannels(ChannelPolicy):
    """Operators do not subscribe or publish as users do: the console is pushed, and
    publishing is the ``publish`` op, which names the service."""

    def authorize_subscribe(self, conn: Connection, channel: str, frame: ClientFrame) -> None:
        raise self.refuse(frame, ErrorCode.FORBIDDEN, "the console is pushed: no sub here")

    def prepare_publish(
        self, conn: Connection, channel: str, data: dict[str, Any], frame: ClientFrame
    ) -> dict[str, Any]:
        raise self.refuse(frame, ErrorCode.FORBIDDEN, "use the publish op, with a service")


async def viewer_joined(ctx: ServiceContext[AdminState], conn: Connection) -> None:
    state(ctx).viewers.add(conn)
    conn.send(encode(state(ctx).console.snapshot()), "console")


async def viewer_left(ctx: ServiceContext[AdminState], conn: Connection) -> None:
    state(ctx).viewers.discard(conn)


async def op_publish(ctx: ServiceContext[AdminState], conn: Connection, frame: ClientFrame) -> None:
    """``{"op":"publish","service":"chat","ch":"lobby","data":{"text":"..."}}``: into the
    channel's stream like any publication (history, offsets), signed ``user: admin``."""
    service = require_str(frame, "service")
    if service not in PUBLISHABLE:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"service must be one of {', '.join(PUBLISHABLE)}", frame.id
        )
    channel = require_str(frame, "ch")
    if not CHANNEL_PATTERN.fullmatch(channel) or channel.startswith("#"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "ch is not a valid channel name", frame.id)
    data = {**require_object(frame, "data"), "user": conn.user, "ts": round(time.time() * 1000, 3)}
    payload = orjson.dumps(data)
    if len(payload) > MAX_DATA_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"data is over {MAX_DATA_BYTES} bytes", frame.id)
    _, offset = await ctx.backplane.broker.publish(f"{service}:{channel}", payload)
    reply = {"op": "published", "id": frame.id, "service": service, "ch": channel}
    conn.send(encode({**reply, "offset": offset}), "published")


async def op_presence(
    ctx: ServiceContext[AdminState], conn: Connection, frame: ClientFrame
) -> None:
    """Where is a user? Online in telephony, and which of the chat rooms the console sees
    (the busiest rooms the replicas report) they are in."""
    user = _user_of(frame)
    presence = ctx.backplane.presence
    online = (await presence.contains("telephony:online", [user]))[user]
    rooms = []
    for room in state(ctx).console.known_channels("chat"):
        if (await presence.contains(f"chat:{room}", [user]))[user]:
            rooms.append(room)
    reply = {"op": "presence", "id": frame.id, "user": user, "online": online, "rooms": rooms}
    conn.send(encode(reply), "presence")


async def op_revoke(ctx: ServiceContext[AdminState], conn: Connection, frame: ClientFrame) -> None:
    """``{"op":"revoke","user":"alice"}``: close every connection of the user (4011, all
    services, all replicas) and void their tokens issued until now."""
    user = _user_of(frame)
    revoked_at = await revoke_user(ctx, user)
    reply = {"op": "revoked", "id": frame.id, "user": user, "revoked_at": revoked_at}
    conn.send(encode(reply), "revoked")


def _user_of(frame: ClientFrame) -> str:
    user = require_str(frame, "user", 64)
    if not USER_PATTERN.fullmatch(user):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "user is not a valid user id", frame.id)
    return user


def setup(app: web.Application, ctx: ServiceContext[AdminState]) -> AdminState:
    admin = AdminState(Console(), set(), [])
    app.router.add_post("/admin/api/login", _login(ctx, admin))
    app.router.add_post("/admin/api/revoke", _revoke(ctx, admin))
    app.router.add_get("/admin/console.js", _console_script)

    async def push_lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ctx.hub.subscribe_live(admin.console, REPORTS_CHANNEL)
        task = asyncio.create_task(_push_forever(ctx, admin))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(push_lifecycle)
    return admin


async def _push_forever(ctx: ServiceContext[AdminState], admin: AdminState) -> None:
    interval = ctx.settings.report_seconds or 2.0
    while True:
        await asyncio.sleep(interval)
        if admin.viewers:
            frame = encode(admin.console.snapshot())
            for viewer in list(admin.viewers):
                viewer.send(frame, "console")
        else:
            admin.console.forget_silent()


async def _console_script(_: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "console.js", headers={"Cache-Control": "no-cache"})


def _login(ctx: ServiceContext[AdminState], admin: AdminState) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _admin_key_usable(ctx, admin)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='body must be JSON: {"key": "..."}\n') from None
        _check_admin_key(ctx, admin, body.get("key") if isinstance(body, dict) else None)
        token = mint_token(ADMIN_USER, ctx.settings.token_secret, TOKEN_TTL)
        return web.json_response({"user": ADMIN_USER, "token": token, "expires_in": TOKEN_TTL})

    return handler


def _revoke(ctx: ServiceContext[AdminState], admin: AdminState) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _check_admin_key(
            ctx, admin, request.headers.get("Authorization", "").removeprefix("Bearer ")
        )
        try:
            body = await request.json()
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
            raise web.HTTPBadRequest(text='body must be JSON: {"user": "<user id>"}\n')
        try:
            revoked_at = await revoke_user(ctx, user)
        except BackplaneUnavailable:
            raise web.HTTPServiceUnavailable(text="backplane unavailable, try again\n") from None
        return web.json_response({"user": user, "revoked_at": revoked_at})

    return handler


def _check_admin_key(ctx: ServiceContext[AdminState], admin: AdminState, given: object) -> None:
    """401 for a wrong key (counted; see :func:`_admin_key_usable`)."""
    key = _admin_key_usable(ctx, admin)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), key.encode()):
        admin.failed_logins.append(time.monotonic())
        raise web.HTTPUnauthorized(text="wrong admin key\n")


def _admin_key_usable(ctx: ServiceContext[AdminState], admin: AdminState) -> str:
    """The admin key; 503 without one, 429 after too many failures in a minute."""
    key = ctx.settings.api_key
    if key is None:
        raise web.HTTPServiceUnavailable(text="the admin console is off: set WWWS_ADMIN_API_KEY\n")
    now = time.monotonic()
    admin.failed_logins[:] = [t for t in admin.failed_logins if now - t < 60.0]
    if len(admin.failed_logins) >= LOGIN_FAILURES_PER_MINUTE:
        raise web.HTTPTooManyRequests(text="too many failed logins; wait a minute\n")
    return key


SPEC: ServiceSpec[AdminState] = ServiceSpec(
    name="admin",
    policy=AdminChannels(),
    ops={"publish": op_publish, "presence": op_presence, "revoke": op_revoke},
    on_connect=viewer_joined,
    on_disconnect=viewer_left,
    setup=setup,
    static_dir=STATIC,
)


def create_app(settings: Settings, backplane: Backplane | None = None) -> web.Application:
    # Admin tokens only, and never the dev login (it would mint them for anyone).
    # No identity provider either: its tokens are the users', never an operator's.
    settings = replace(
        settings,
        token_secret=admin_token_secret(settings.api_key),
        dev_login=False,
        jwks_url=None,
        jwks_file=None,
    )
    return build_app(settings, SPEC, backplane)
