"""Event-loop lag: how late a timer fires. A blocked loop delays every client at once."""

from __future__ import annotations

import asyncio

from .metrics import Metrics
from .replica import ReplicaState

__all__ = ["watch_loop_lag"]


async def watch_loop_lag(
    metrics: Metrics, replica: ReplicaState | None = None, interval: float = 0.5
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        metrics.event_loop_lag.set(lag)
        if replica is not None:
            replica.loop_lag = lag  # the heartbeat policy reads it
        metrics.event_loop_lag_distribution.observe(lag)
