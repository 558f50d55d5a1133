"""Running one replica: the public and internal listeners, and the drain on SIGTERM.

Drain order (see docs/operations.md): readiness goes 503 at once, so Traefik's health
check takes the replica out while it still serves; after ``drain_seconds`` the listener
closes, every socket gets 1001 (clients reconnect at once, to another replica), and the
process exits well inside compose's ``stop_grace_period``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable

import uvloop
from aiohttp import web

from .internal import build_internal_app
from .logs import configure_logging
from .service import CONTEXT, ServiceContext
from .settings import Settings, SettingsError
from .survivor_freeze import freezing_survivors

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)


async def serve(app: web.Application, stop: asyncio.Event | None = None) -> None:
    ctx = app[CONTEXT]
    settings = ctx.settings
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_timeout, access_log=None
    )
    internal_app = build_internal_app(ctx.replica, ctx.backplane, ctx.metrics)
    internal = web.AppRunner(internal_app, handle_signals=False, access_log=None)
    await runner.setup()
    await internal.setup()
    await web.TCPSite(internal, settings.host, settings.internal_port).start()
    await web.TCPSite(runner, settings.host, settings.port).start()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.ExitStack() as gc_policy:
        if settings.gc_freeze:
            # the modules, the app and its routes live as long as the process: collect
            # once, then keep them out of every later collection's walk
            gc.collect()
            gc.freeze()
            if settings.gc_thaw_seconds > 0:
                gc_policy.enter_context(freezing_survivors(settings.gc_thaw_seconds))
        await _serve_until(ctx, runner, internal, stop)


async def _serve_until(
    ctx: ServiceContext, runner: web.AppRunner, internal: web.AppRunner, stop: asyncio.Event
) -> None:
    settings = ctx.settings
    log.info(
        "listening",
        extra={
            "event": "start",
            "port": settings.port,
            "internal_port": settings.internal_port,
            "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        },
    )
    await stop.wait()
    ctx.replica.draining = True
    ctx.metrics.draining.set(1)
    log.info("draining", extra={"event": "drain", "seconds": settings.drain_seconds})
    await asyncio.sleep(settings.drain_seconds)
    log.info(
        "closing connections",
        extra={"event": "shutdown", "connections": len(ctx.replica.connections)},
    )
    await runner.cleanup()
    await internal.cleanup()
    log.info("stopped", extra={"event": "stop"})


def main(service: str, create_app: Callable[[Settings], web.Application]) -> None:
    try:
        settings = Settings.from_env(service)
    except SettingsError as error:
        print(f"{service}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, service, settings.node_id)
    loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(create_app(settings)))
