"""SIGTERM to one chat replica: its clients get 1001, new handshakes never fail.

Runs after tests/e2e/test_stack.py (it disturbs the stack).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from chat_room import Newcomers
from helpers import receive_close
from stack import Stack
from stack_fixtures import compose_up


async def test_sigterm_drains_one_replica_without_failed_handshakes(stack: Stack):
    try:
        await _drain_one_replica(stack)
    finally:
        await compose_up(stack)  # Docker does not restart a replica it was told to kill


async def _drain_one_replica(stack: Stack) -> None:
    containers = {c.id[:12]: c for c in stack.containers("chat")}
    assert len(containers) == stack.chat_replicas
    async with stack.session() as session:
        clients: dict[str, list[aiohttp.ClientWebSocketResponse]] = {}
        for i in range(12):
            ws, hello = await stack.connect(session, "chat", f"drain{i}")
            clients.setdefault(hello["node"], []).append(ws)
        victim_node = max(clients, key=lambda node: len(clients[node]))
        victim = containers[victim_node]

        newcomers = Newcomers(stack, "drain-room")
        newcomers.start()
        await asyncio.sleep(1)
        signalled = time.monotonic()
        victim.kill(signal="SIGTERM")
        codes = await asyncio.gather(*(receive_close(ws, 30) for ws in clients[victim_node]))
        closed_after = time.monotonic() - signalled
        await asyncio.sleep(2)  # keep probing while the replica exits
        await newcomers.stop()
        attempts, failures = newcomers.attempts, newcomers.failures

        traefik = stack.containers("traefik")[0].logs(tail=40).decode(errors="replace")
        errors = [repr(ws.exception()) for ws in clients[victim_node]]
        assert set(codes) == {1001}, (errors, traefik)
        # the drain waits WWWS_DRAIN_SECONDS with readiness at 503, then closes
        assert stack.drain_seconds <= closed_after < stack.drain_seconds + 10
        assert attempts > 20
        assert failures == 0, f"{failures} of {attempts} handshakes failed during the drain"
        # clients on the other replicas were not disturbed
        for node, sockets in clients.items():
            if node != victim_node:
                for ws in sockets:
                    assert not ws.closed
                    await ws.close()
        victim.reload()
        exit_deadline = time.monotonic() + 20
        while victim.status == "running" and victim.attrs["RestartCount"] == 0:
            if time.monotonic() > exit_deadline:
                raise AssertionError("the drained replica did not exit within 20 s")
            await asyncio.sleep(0.5)
            victim.reload()
