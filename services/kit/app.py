"""The application factory every service uses: one aiohttp app per replica, with the
WebSocket route (handled by :mod:`services.kit.session`), the pages, the hub and the
background tasks, and the drain that closes every connection when the app shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from .auth import TokenVerifier
from .backplane import Backplane, Publication, open_backplane
from .connection import publication_age
from .heartbeat import Heartbeat
from .hub import ChannelHub
from .jwks import KeySet
from .logs import quiet_bad_http_requests
from .loop_lag import watch_loop_lag
from .metrics import Metrics
from .outage import watch_backplane_lifecycle
from .pages import add_page_routes
from .protocol import CloseCode
from .replica import ReplicaState
from .replica_report import report_lifecycle
from .revocation import revocation_lifecycle
from .service import CONTEXT, ServiceContext, ServiceSpec, StateT
from .session import client_ops, websocket_endpoint
from .settings import Settings

__all__ = ["CONTEXT", "build_app", "close_connections"]

log = logging.getLogger(__name__)


def build_app(
    settings: Settings, spec: ServiceSpec[StateT], backplane: Backplane | None = None
) -> web.Application:
    """A pure factory: nothing starts until the app runs (tests call it directly)."""
    app = web.Application()
    quiet_bad_http_requests()
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

    hub = ChannelHub(
        backplane,
        spec.name,
        settings.history_size,
        observe_fanout,
        metrics.messages_sent.labels(spec.name, "msg").inc,
    )
    replica = ReplicaState(settings.node_id)
    ctx = ServiceContext(
        settings=settings,
        spec=spec,
        backplane=backplane,
        hub=hub,
        metrics=metrics,
        replica=replica,
        verifier=_token_verifier(settings),
        heartbeat=Heartbeat(settings.heartbeat_policy, replica, metrics, time.monotonic),
        ops=client_ops(spec),
    )
    metrics.outbound_peak.set_function(ctx.replica.peak_outbound_bytes)
    app[CONTEXT] = ctx
    app.router.add_get(f"/{spec.name}/ws", websocket_endpoint)
    add_page_routes(app, ctx)
    app.cleanup_ctx.append(_backplane_lifecycle)
    app.cleanup_ctx.append(_loop_lag_lifecycle)
    app.cleanup_ctx.append(_heartbeat_lifecycle)
    app.cleanup_ctx.append(watch_backplane_lifecycle)
    app.cleanup_ctx.append(report_lifecycle)
    app.cleanup_ctx.append(revocation_lifecycle)
    keys = ctx.verifier.keys
    if keys is not None and keys.url is not None:
        app.cleanup_ctx.append(keys.lifecycle())
    app.on_shutdown.append(_going_away)
    if spec.setup is not None:
        ctx.set_state(spec.setup(app, ctx))
    return app


def _token_verifier(settings: Settings) -> TokenVerifier:
    """HS256 with the shared secret, plus the identity provider's keys when configured
    (a JWKS file is read now: a bad one stops the replica with its message)."""
    keys = None
    if settings.jwks_file:
        keys = KeySet.from_file(settings.jwks_file)
    elif settings.jwks_url:
        keys = KeySet(settings.jwks_url, settings.jwks_refresh_seconds)
    return TokenVerifier(
        settings.token_secret, keys, settings.token_issuer, settings.token_audience
    )


async def _backplane_lifecycle(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONTEXT].backplane.close()


async def _loop_lag_lifecycle(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    task = asyncio.create_task(watch_loop_lag(ctx.metrics, ctx.replica))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _heartbeat_lifecycle(app: web.Application) -> AsyncIterator[None]:
    async for state in app[CONTEXT].heartbeat.lifecycle():
        yield state


async def _going_away(app: web.Application) -> None:
    """The drain's last step: every client is told to reconnect (to another replica) at
    once, and each closing handshake completes before the replica stops."""
    await close_connections(app[CONTEXT], CloseCode.GOING_AWAY, "server going away")


async def close_connections(ctx: ServiceContext, code: int, reason: str) -> None:
    """Close every connection of the replica with ``code`` and wait until each session
    has ended: the client answered the close frame, or ``close_timeout`` passed."""
    connections = list(ctx.replica.connections)
    if connections:
        # each session ends by close_timeout (the transport is dropped then); the margin
        # covers its bookkeeping (unsubscribing, the disconnect hook)
        closing = [asyncio.create_task(c.close_and_wait(code, reason)) for c in connections]
        _, late = await asyncio.wait(closing, timeout=ctx.settings.close_timeout + 1.0)
        for task in late:
            task.cancel()
