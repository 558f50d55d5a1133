"""A replica killed with SIGKILL costs no handshake begun after the kill: Traefik retries
one that cannot reach its replica (connection refused, or the 1 s dial timeout) on another
replica, before the upgrade, until the health check has taken the dead one out.

Runs against the shared session stack and puts it back (compose up --wait) afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
from stack import Stack
from stack_fixtures import compose_up

WORKERS = 8
SECONDS = 8.0
KILL_AFTER = 2.0


async def test_no_handshake_fails_when_a_replica_is_killed(stack: Stack):
    stop = asyncio.Event()
    nodes: collections.Counter[str] = collections.Counter()
    failures: list[tuple[float, str]] = []  # (when the handshake started, what failed)
    done = 0

    async def handshakes(worker: int) -> None:
        nonlocal done
        async with stack.session() as session:
            n = 0
            while not stop.is_set():
                n += 1
                began = time.monotonic()
                try:
                    ws, hello = await stack.connect(session, "chat", f"retry{worker}-{n}")
                    nodes[hello["node"]] += 1
                    await ws.close()
                    done += 1
                except aiohttp.WSServerHandshakeError as error:
                    failures.append((began, f"HTTP {error.status}"))  # no URL: it has the token
                except (aiohttp.ClientError, TimeoutError, AssertionError) as error:
                    failures.append((began, type(error).__name__))

    workers = [asyncio.create_task(handshakes(i)) for i in range(WORKERS)]
    try:
        await asyncio.sleep(KILL_AFTER)
        victim = stack.containers("chat")[0]
        before_kill = nodes[victim.id[:12]]
        assert before_kill > 0, f"no handshake reached the victim before the kill: {nodes}"
        killing = time.monotonic()
        await asyncio.to_thread(victim.kill)  # SIGKILL: no drain, no readiness change
        killed = time.monotonic()  # the signal has landed once the engine's API call returns
        await asyncio.sleep(SECONDS - KILL_AFTER)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    # A handshake the victim had already accepted when it died cannot be retried (the
    # request reached it): at most one per worker, those begun before the kill landed (the
    # engine's API call takes some milliseconds, and a request can reach the victim then).
    in_flight = [what for began, what in failures if began < killed]
    after = [(round(began - killing, 2), what) for began, what in failures if began >= killed]
    print(f"{done} handshakes, {len(in_flight)} in flight at the kill failed: {in_flight}")
    try:
        assert done > 100, f"only {done} handshakes in {SECONDS}s"
        assert len(in_flight) <= WORKERS
        assert not after, f"handshakes begun after the kill failed (s after it, why): {after}"
    finally:
        await compose_up(stack)
