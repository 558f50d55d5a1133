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
import logging
import time
from collections.abc import Callable

from .background import stoppable, wait_or_stop
from .protocol import CloseCode
from .service import ServiceContext

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
            ctx.replica.backplane_answered_at = time.monotonic()
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
        await wait_or_stop(stop, interval)


#: the aiohttp cleanup context running :func:`watch_backplane` while the app runs
watch_backplane_lifecycle = stoppable(
    "backplane-watch",
    watch_backplane,
    PROBE_TIMEOUT + 1.0,
    enabled=lambda ctx: ctx.settings.backplane_grace_seconds > 0,
)
