"""The Docker socket is root on the host: whoever can POST to it can start a privileged
container. Traefik (discovering replicas) and Prometheus (finding scrape targets) only
read, so they talk to this proxy instead, over an internal network, and it forwards only
the read calls they make (:data:`ALLOWED`, GET or HEAD) to the socket. Anything else is
refused with 403 and a Docker-style ``{"message": ...}`` before it reaches the engine.

Responses are streamed as they come (``/events`` never ends): Traefik watches the event
stream to learn about containers starting and dying.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

__all__ = ["ALLOWED", "build_proxy_app", "is_allowed"]

log = logging.getLogger(__name__)

_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
#: read calls, with or without an API version prefix (/v1.41/...)
ALLOWED = re.compile(
    r"(/v1\.\d{1,3})?/(_ping|version|info|events|containers/json|containers/" + _ID + r"/json"
    r"|networks|networks/"
    + _ID
    # Swarm (Traefik's swarm provider, Prometheus' dockerswarm_sd): lists and single objects
    + r"|services|services/"
    + _ID
    + r"|tasks|tasks/"
    + _ID
    + r"|nodes|nodes/"
    + _ID
    + r")"
)
READ_METHODS = frozenset({"GET", "HEAD"})
#: upstream headers worth passing on (framing headers are aiohttp's to write)
PASSED_HEADERS = ("Content-Type", "Api-Version", "Docker-Experimental", "Ostype", "Server")
_SOCKET = web.AppKey("docker_socket", str)
_SESSION = web.AppKey("docker_session", aiohttp.ClientSession)


def is_allowed(method: str, raw_path: str) -> bool:
    """``raw_path`` as sent (no decoding: an encoded ``/`` or ``..`` never matches)."""
    return method in READ_METHODS and ALLOWED.fullmatch(raw_path) is not None


def build_proxy_app(socket_path: str) -> web.Application:
    app = web.Application()
    app[_SOCKET] = socket_path
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.UnixConnector(path=app[_SOCKET])
    # no total timeout: the event stream stays open for as long as its reader wants it
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        app[_SESSION] = session
        yield


async def _forward(request: web.Request) -> web.StreamResponse:
    raw_path = request.raw_path.split("?", 1)[0]
    if not is_allowed(request.method, raw_path):
        log.warning(
            "refused a docker API call",
            extra={"event": "refused", "method": request.method, "path": raw_path[:200]},
        )
        return web.json_response(
            {"message": f"{request.method} {raw_path[:200]} is not allowed by the socket proxy"},
            status=403,
        )
    url = f"http://docker{request.raw_path}"
    session = request.app[_SESSION]
    try:
        async with session.request(request.method, url, allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in PASSED_HEADERS:
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectionError as error:
        if request.transport is None or request.transport.is_closing():
            raise  # the reader went away (Traefik restarting): nothing to answer
        return web.json_response({"message": f"docker engine unreachable: {error}"}, status=502)
