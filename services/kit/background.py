"""Background tasks of a replica that talk to the backplane, stopped by an event.

Not by cancelling: a cancellation that lands as a Redis call completes can be swallowed
(``asyncio.wait_for`` in Python 3.11, redis-py), and the app's cleanup would then wait
forever for the task. So the task gets a ``stop`` event, checks it between rounds, and is
cancelled only if it has not ended within ``stop_timeout`` of being asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web

from .service import CONTEXT, ServiceContext

__all__ = ["CleanupContext", "running", "stoppable", "wait_or_stop"]

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def stoppable(
    name: str,
    run: Callable[[ServiceContext, asyncio.Event], Coroutine[Any, Any, None]],
    stop_timeout: float,
    enabled: Callable[[ServiceContext], bool] = lambda _: True,
) -> CleanupContext:
    """An aiohttp cleanup context running ``run(ctx, stop)`` while the app runs."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ctx = app[CONTEXT]
        if not enabled(ctx):
            yield
            return
        async with running({name: lambda stop: run(ctx, stop)}, stop_timeout):
            yield

    return lifecycle


@contextlib.asynccontextmanager
async def running(
    runs: Mapping[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]], stop_timeout: float
) -> AsyncIterator[None]:
    """Run each ``run(stop)`` as a task while the block runs; then set ``stop`` and wait
    for them, cancelling those still running after ``stop_timeout``."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run(stop), name=name) for name, run in runs.items()]
    try:
        yield
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=stop_timeout)
        for task in late:
            task.cancel()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
