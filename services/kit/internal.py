"""The internal listener's app (never routed by Traefik): liveness, readiness, metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .backplane import Backplane, BackplaneUnavailable
from .metrics import Metrics
from .replica import ReplicaState

__all__ = ["build_internal_app"]

_PARTS = web.AppKey("health_parts", tuple)


def build_internal_app(
    replica: ReplicaState, backplane: Backplane, metrics: Metrics
) -> web.Application:
    app = web.Application()
    app[_PARTS] = (replica, backplane, metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    """503 while draining (so Traefik's health check takes the replica out before it
    stops listening) or when the backplane does not answer."""
    replica, backplane, metrics = request.app[_PARTS]
    if replica.draining:
        return web.Response(status=503, text="draining\n")
    try:
        await asyncio.wait_for(backplane.ping(), timeout=1.0)
    except (BackplaneUnavailable, TimeoutError):
        metrics.backplane_errors.inc()
        return web.Response(status=503, text="backplane unavailable\n")
    return web.Response(text="ready\n")


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[_PARTS][2]
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
