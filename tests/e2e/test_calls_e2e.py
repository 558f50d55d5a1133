"""kill -9 the callee's telephony replica mid-call: the caller hears `ended` within the
lease bound, and both users can call again (README, telephony; docs/protocol.md).

The test needs two telephony replicas (the test stack runs two; compose `--scale`, as
`make scale S=telephony N=2` does, makes sure) and puts the killed one back after.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest
from helpers import receive_op
from stack import ROOT, Stack

from services.telephony.limits import TelephonyLimits

# The stack runs the default lease: a dead party is stale after 4 leases and noticed at
# the next renewal; allow for Traefik and the event loop on a busy 2-core machine.
BOUND = TelephonyLimits().stale_after + TelephonyLimits().lease_seconds + 5.0


def _scale_telephony(stack: Stack, replicas: int) -> None:
    subprocess.run(
        [
            "docker", "compose", "--env-file", str(stack.env_file), "-p", stack.project,
            "-f", str(ROOT / "compose.yaml"), "up", "-d", "--no-build", "--no-deps",
            "--no-recreate", "--wait", "--wait-timeout", "120",
            "--scale", f"telephony={replicas}", "telephony",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


@pytest.fixture
def two_telephony_replicas(stack: Stack) -> Iterator[Stack]:
    _scale_telephony(stack, max(2, stack.telephony_replicas))
    try:
        yield stack
    finally:
        # The other tests count the stack's own number of replicas, the killed one included.
        _scale_telephony(stack, stack.telephony_replicas)


async def connect_on(
    stack: Stack, session: aiohttp.ClientSession, user: str, avoid: str | None = None
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A telephony connection for ``user``, on a replica other than ``avoid``: Traefik
    spreads connections (and needs a moment to route a new replica, or drop a dead one)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            ws, hello = await stack.connect(session, "telephony", user)
        except (aiohttp.ClientError, AssertionError):
            ws, hello = None, {}
        if ws is not None and hello.get("node") != avoid:
            return ws, str(hello["node"])
        if ws is not None:
            await ws.close()
        assert time.monotonic() < deadline, f"no telephony replica other than {avoid}"
        await asyncio.sleep(0.2)


async def test_kill_9_the_callee_replica_ends_the_call_for_the_caller(two_telephony_replicas):
    stack = two_telephony_replicas
    async with stack.session() as session:
        caller, caller_node = await connect_on(stack, session, "e2e-kill-caller")
        callee, callee_node = await connect_on(stack, session, "e2e-kill-callee", caller_node)
        await caller.send_json({"op": "call", "id": 1, "to": "e2e-kill-callee"})
        call_id = (await receive_op(caller, "ringing", 5))["call_id"]
        await receive_op(callee, "incoming", 5)
        await callee.send_json({"op": "answer", "call_id": call_id})
        await receive_op(caller, "answered", 5)

        stack.container_for(callee_node).kill()  # SIGKILL: no close frames, no cleanup
        killed_at = time.monotonic()
        ended = await receive_op(caller, "ended", BOUND)
        assert ended == {"op": "ended", "call_id": call_id, "reason": "disconnected"}
        assert time.monotonic() - killed_at <= BOUND

        # Both guards are released: the callee, back on the surviving replica, is called
        # again and can answer and hang up.
        callee_again, _ = await connect_on(stack, session, "e2e-kill-callee", callee_node)
        await caller.send_json({"op": "call", "id": 2, "to": "e2e-kill-callee"})
        second = (await receive_op(caller, "ringing", 5))["call_id"]
        assert (await receive_op(callee_again, "incoming", 5))["call_id"] == second
        await callee_again.send_json({"op": "answer", "call_id": second})
        await receive_op(caller, "answered", 5)
        await callee_again.send_json({"op": "hangup", "call_id": second})
        assert (await receive_op(caller, "ended", 5))["reason"] == "hangup"
        await caller.close()
        await callee_again.close()
