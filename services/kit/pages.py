"""Web pages and the dev-only login that lets them get a token.

Every page is served with a Content-Security-Policy: scripts from this origin only, plus
the page's own inline module script by its hash (computed here from the file, so editing
the page cannot leave a stale hash behind); connections to this origin only (``wss:``
to the same host included); no plugins, no framing, no foreign forms. And a
Permissions-Policy: the microphone (and camera) only for the page whose calls need them
(telephony), nothing else for any page.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import USER_PATTERN, mint_token

if TYPE_CHECKING:
    from .service import ServiceContext

__all__ = ["add_page_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KIT_STATIC = Path(__file__).parent / "static"
# The browser client lives with the Python one (clients/); the image copies it to the same
# place relative to the package.
BROWSER_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "wwws.js"
DEV_TOKEN_TTL = 12 * 3600.0
#: pages whose calls use the microphone and camera (getUserMedia)
MEDIA_PAGES = frozenset({"telephony"})
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


def page_headers(page: Path, uses_media: bool = False) -> dict[str, str]:
    """The security headers of one HTML page (see the module's docstring)."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(page.read_text(encoding="utf-8"))
    ]
    policy = {
        "default-src": "'self'",
        "script-src": " ".join(["'self'", *hashes]),
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "media-src": "'self' blob:",
        "object-src": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
        "form-action": "'self'",
    }
    media = "(self)" if uses_media else "()"
    return {
        "Content-Security-Policy": "; ".join(f"{k} {v}" for k, v in policy.items()),
        "Permissions-Policy": (
            f"microphone={media}, camera={media}, geolocation=(), payment=(), usb=()"
        ),
        "Cache-Control": "no-cache",
    }


def add_page_routes(app: web.Application, ctx: ServiceContext) -> None:
    name = ctx.spec.name
    if ctx.spec.static_dir is not None:
        page = ctx.spec.static_dir / "index.html"
        app.router.add_get(f"/{name}/", _file(page, page_headers(page, name in MEDIA_PAGES)))
        app.router.add_get(f"/{name}", _redirect(f"/{name}/"))
    app.router.add_get(f"/{name}/wwws.js", _file(BROWSER_CLIENT))
    app.router.add_get(f"/{name}/style.css", _file(KIT_STATIC / "style.css"))
    # The landing page belongs to the kit, not to one service: every service serves it and
    # Traefik's `landing` router spreads `/` over all of them (compose.yaml).
    landing = KIT_STATIC / "index.html"
    app.router.add_get("/", _file(landing, page_headers(landing)))
    if ctx.settings.dev_login:
        app.router.add_post(f"/{name}/api/dev-login", _dev_login(ctx))


def _file(path: Path, headers: Mapping[str, str] | None = None) -> Handler:
    sent = dict(headers or {"Cache-Control": "no-cache"})

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=sent)

    return handler


def _redirect(location: str) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(location)

    return handler


def _dev_login(ctx: ServiceContext) -> Handler:
    """Mints a token for any user name: a development convenience, off in production
    (WWWS_DEV_LOGIN=0), where tokens come from your own login service."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='body must be JSON: {"user": "alice"}\n') from None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not USER_PATTERN.fullmatch(user):
            raise web.HTTPBadRequest(text="user must be 1-64 of A-Z a-z 0-9 _ - . @\n")
        token = mint_token(user, ctx.settings.token_secret, DEV_TOKEN_TTL)
        return web.json_response({"user": user, "token": token})

    return handler
