"""Moving clients off a replica that lost its backplane.

A replica that cannot reach the backplane can neither store nor deliver anything. Its
``/readyz`` goes 503, so Traefik sends new clients elsewhere, but the clients already on it
would sit in silence for as long as the outage lasts. So the replica probes the backplane
every second or so; once it has been unreachable for ``WWWS_BACKPLANE_GRACE_SECONDS``
(default 5; 0 turns this off) the replica closes its clients with **1013** (try again
later): they reconnect through Traefik to a healthy replica and resume with ``since``.
Until a probe succeeds again, new handshakes are refused with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .protocol import CloseCode
from .service import CONTEXT, ServiceContext

__all__ = ["BackplaneOutage", "watch_backplane", "watch_backplane_lifecycle"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0  # a partitioned Redis does not refuse: it stops answering


class BackplaneOutage:
    """How long the backplane has been unreachable, from one probe result at a time."""

    def __init__(self, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.lost = False  # unreachable for longer than the grace period
        self._clock = clock
        self._since: float | None = None

    def observe(self, reachable: bool) -> bool:
        """Record one probe; True exactly once per outage: when it outlasts the grace."""
        if reachable:
            self._since = None
            self.lost = False
            return False
        now = self._clock()
        if self._since is None:
            self._since = now
        if not self.lost and now - self._since >= self.grace:
            self.lost = True
            return True
        return False


async def watch_backplane(ctx: ServiceContext, stop: asyncio.Event) -> None:
    """Probe the backplane until ``stop`` is set; close every client once an outage
    outlasts the grace period."""
    grace = ctx.settings.backplane_grace_seconds
    outage = BackplaneOutage(grace)
    interval = min(1.0, max(0.05, grace / 4))
    while not stop.is_set():
        try:
            await asyncio.wait_for(ctx.backplane.ping(), PROBE_TIMEOUT)
            reachable = True
        except Exception:  # BackplaneUnavailable, a timeout: whatever it is, no backplane
            reachable = False
        if outage.observe(reachable):
            connections = list(ctx.replica.connections)
            log.warning(
                "backplane unreachable: closing clients",
                extra={"event": "backplane_lost", "seconds": grace, "clients": len(connections)},
            )
            for conn in connections:
                conn.close(CloseCode.TRY_AGAIN_LATER, "backplane unavailable, reconnect")
        elif reachable and ctx.replica.backplane_lost:
            log.info("backplane reachable again", extra={"event": "backplane_back"})
        ctx.replica.backplane_lost = outage.lost
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def watch_backplane_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """An aiohttp cleanup context running :func:`watch_backplane` while the app runs."""
    ctx = app[CONTEXT]
    if ctx.settings.backplane_grace_seconds <= 0:
        yield
        return
    # Stopped by an event, not by cancelling: a cancellation that lands as the probe
    # completes can be swallowed (asyncio.wait_for in 3.11, redis-py), and the app's
    # cleanup would wait forever.
    stop = asyncio.Event()
    task = asyncio.create_task(watch_backplane(ctx, stop), name="backplane-watch")
    yield
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), PROBE_TIMEOUT + 1.0)
    except TimeoutError:
        task.cancel()
